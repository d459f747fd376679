"""Every boundary of an estate of self-signed services migrates to the CA with the
``trustyard migrate`` CLI alone, while every client keeps requesting every 200 ms, each from
its own process: nginx, a Python and a Node.js HTTPS service; curl with a copied ``--cacert``,
requests with a copied bundle, a PKCS#12 and a JKS (keytool) truststore, a ``verify=False``
client, and a Secret manifest holding a copy. Not one request fails; the ``verified`` step
names the client that does not verify, which the operator then points at the CA's root;
afterwards the old copies are gone, every trust store holds the CA root, every service
presents a chain to it, and ``trustyard scan`` reports none of ``self_signed_leaf``,
``leaf_in_trust_store``, ``verification_disabled``."""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from trustyard.ca.home import InitOptions, init_home
from trustyard.errors import ExitCode
from trustyard.migrate.demo import Estate, Service
from trustyard.testing import need
from trustyard.x509.summary import fingerprint_sha256

from ..support import PASSWORD
from .live_estate import Running, build

pytestmark = pytest.mark.slow

STATES = ("issued", "trusted", "switched", "verified", "retired", "done")
GONE = {"self_signed_leaf", "leaf_in_trust_store", "verification_disabled"}
INSECURE = "clients/dashboard/client.py"


class Operator:
    """The CLI as its own process, from the estate's directory, with the CA home in the environment."""

    def __init__(self, estate: Estate, home: Path) -> None:
        self.estate, self.home = estate, home
        self.transcript: list[str] = []

    def start(self, *args: str) -> subprocess.Popen[str]:
        env = {**os.environ, "TRUSTYARD_HOME": str(self.home), "TRUSTYARD_PASSWORD": PASSWORD.decode(),
               "TRUSTYARD_NO_PROGRESS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
        process = subprocess.Popen([sys.executable, "-m", "trustyard", *args], cwd=self.estate.root, env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        process.args = args
        return process

    def finish(self, process: subprocess.Popen[str]) -> int:
        out, err = process.communicate(timeout=120)
        self.transcript.append(f"$ trustyard {' '.join(process.args)}  -> {process.returncode}\n{out}{err}")
        self.last = out + err
        return process.returncode

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        process = self.start(*args)
        code = self.finish(process)
        return subprocess.CompletedProcess(args, code, self.last, "")

    def ok(self, *args: str) -> str:
        done = self.run(*args)
        assert done.returncode == 0, "\n".join(self.transcript[-3:])
        return done.stdout + done.stderr

    def boundaries(self) -> list[dict]:  # type: ignore[type-arg]
        return json.loads(self.ok("migrate", "status", "--json"))["boundaries"]  # type: ignore[no-any-return]

    def scan(self) -> dict:  # type: ignore[type-arg]
        endpoints = [a for s in self.estate.services for a in ("--endpoint", f"{s.endpoint}/{s.host}")]
        done = self.run("scan", "services", "clients", "k8s", *endpoints, "--json")
        assert done.returncode in (0, 1), done.stderr
        return json.loads(done.stdout)  # type: ignore[no-any-return]


def wait_until(condition: Callable[[], object], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def switch(operator: Operator, running: Running, service: Service, boundary: str) -> None:
    """The switched step replaces the service's files, then waits for the endpoint to serve them:
    the operator reloads the service meanwhile, as soon as the files changed."""
    files = [running.estate.cert_dir(service.name) / name for name in ("tls.crt", "tls.key")]
    before = [f.read_bytes() for f in files]
    stepping = operator.start("migrate", "step", boundary, "--to", "switched")
    # both replaced: a reload between the two renames would load a certificate with the old key
    wait_until(lambda: all(f.read_bytes() != b for f, b in zip(files, before, strict=True))
               or stepping.poll() is not None, what=f"{service.host}'s certificate and key replaced")
    running.reload(service.name)
    assert operator.finish(stepping) == 0, "\n".join(operator.transcript[-2:])


def line_of(path: Path, text: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def fp_of(cert: x509.Certificate) -> str:
    """The SHA-256 fingerprint as ``scan --json`` spells it."""
    return fingerprint_sha256(cert).replace(":", "").lower()


def codes_for(report: dict, fingerprints: set[str]) -> set[str]:  # type: ignore[type-arg]
    return {f["code"] for f in report["findings"] if f.get("fingerprint_sha256") in fingerprints}


def use_the_ca(client: Path, root: Path) -> None:
    """What the operator does to the verify=False client: verify against the CA's root."""
    text = client.read_text()
    assert "verify=False" in text
    fixed = text.replace("verify=False", f"verify={str(root)!r}").replace("urllib3.disable_warnings()\n", "")
    staged = client.with_suffix(".new")
    staged.write_text(fixed)
    staged.replace(client)  # the client loop reloads it whole at its next request


def served_leaf(host: str, port: int, root: Path) -> x509.Certificate:
    """The certificate ``host`` on ``port`` presents to a client trusting only ``root`` (the
    handshake verifies the chain to it and the name)."""
    import socket

    context = ssl.create_default_context(cafile=str(root))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname=host) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def test_every_boundary_migrates_with_the_cli_alone_and_no_client_request_fails(tmp_path: Path) -> None:
    for tool in ("nginx", "node", "java", "keytool", "curl"):
        need(tool)
    estate = build(tmp_path / "estate")
    home = tmp_path / "ca"
    init_home(home, PASSWORD, InitOptions(allow=("*.internal",)))
    root = home / "ca" / "root.crt"
    root_fp = fp_of(x509.load_pem_x509_certificate(root.read_bytes()))
    intermediate = x509.load_pem_x509_certificate((home / "ca" / "intermediate.crt").read_bytes())
    old = {s.host: fp_of(x509.load_pem_x509_certificate((estate.cert_dir(s.name) / "tls.crt").read_bytes()))
           for s in estate.services}
    operator = Operator(estate, home)
    running = Running(estate).start()
    try:
        running.wait_for_requests(5)
        before = operator.scan()
        assert {"self_signed_leaf", "leaf_in_trust_store"} <= codes_for(before, set(old.values())), before["findings"]
        assert [f["locations"] for f in before["findings"] if f["code"] == "verification_disabled"] == [
            [f"{INSECURE}:{line_of(estate.root / INSECURE, 'verify=False')}"]], before["findings"]

        endpoints = [a for s in estate.services for a in ("--endpoint", s.endpoint)]
        operator.ok("migrate", "plan", "services", "clients", "k8s", *endpoints, "--save")
        boundaries = operator.boundaries()
        by_host = {name: b for b in boundaries for name in b["names"]}
        assert set(by_host) >= {s.host for s in estate.services}, boundaries
        assert {b["state"] for b in boundaries} == {"planned"}, boundaries

        named_insecure = []
        for service in estate.services:
            boundary = by_host[service.host]
            for state in STATES:
                if state == "verified":
                    done = operator.run("migrate", "step", boundary["id"], "--to", state)
                    said = done.stdout + done.stderr
                    if service.name == "billing":  # the service the verify=False client calls
                        # refused, naming the client that does not verify; the operator fixes it
                        assert done.returncode == ExitCode.FAILED and INSECURE in said, said
                        blocked = next(b for b in operator.boundaries() if b["id"] == boundary["id"])
                        assert blocked["state"] == "switched" and INSECURE in json.dumps(blocked["blocking"]), blocked
                        named_insecure.append(service.name)
                        use_the_ca(estate.root / INSECURE, root)
                        running.wait_for_requests(3)
                        operator.ok("migrate", "step", boundary["id"], "--to", state)
                    else:
                        assert done.returncode == 0, "\n".join(operator.transcript[-2:])
                        assert INSECURE not in said
                elif state == "switched" and service.runtime == "nginx":  # the step reloads it
                    operator.ok("migrate", "step", boundary["id"], "--to", state,
                                "--reload-cmd", running.reload_command(service.name))
                elif state == "switched":  # the operator reloads while the step waits
                    switch(operator, running, service, boundary["id"])
                else:
                    operator.ok("migrate", "step", boundary["id"], "--to", state)
                running.wait_for_requests(2)
            final = next(b for b in operator.boundaries() if b["id"] == boundary["id"])
            assert final["state"] == "done", final
        assert named_insecure == ["billing"]
        running.wait_for_requests(10)  # every client, on the CA's chain alone, a while longer

        failures = running.failures()
        print("requests:", running.summary())  # shown with -s
        assert failures == {c.name: [] for c in estate.clients}, "\n".join(operator.transcript)
        assert all(len(running.lines(c.name)) >= 50 for c in estate.clients), running.summary()
        # A request every 200 ms (start to start), none hung: on a busy machine a few take longer.
        gaps = {c.name: sorted(running.gaps(c.name)) for c in estate.clients}
        assert all(g[len(g) // 2] < 0.3 and g[-1] < 5 for g in gaps.values()), {
            name: (g[len(g) // 2], g[-1]) for name, g in gaps.items()}

        # Every service presents a CA leaf verified to the root; no trust store holds an old copy, each the root.
        for s in estate.services:
            leaf = served_leaf(s.host, s.port, root)
            assert leaf.issuer == intermediate.subject and fp_of(leaf) != old[s.host], leaf
        after = operator.scan()
        where: dict[str, set[str]] = {}
        for item in after["certificates"]:
            where.setdefault(item["fingerprint_sha256"], set()).add(item["location"].split("#")[0])
        for fp in old.values():
            assert fp not in where, where.get(fp)
        trust_files = {c.trust for c in estate.clients if c.trust} | set(estate.manifests)
        assert trust_files <= where.get(root_fp, set()), (trust_files, where.get(root_fp))
        assert not codes_for(after, set(old.values())) & GONE
        assert not {f["code"] for f in after["findings"]} & GONE, after["findings"]
        secret = yaml.safe_load((estate.root / estate.manifests[0]).read_text())
        held = x509.load_pem_x509_certificates(base64.b64decode(secret["data"]["ca.crt"]))
        assert [fp_of(c) for c in held] == [root_fp]
    finally:
        running.stop()
