"""An intermediate rotation and then a root rotation of a running CA, end to end with real
processes under load: agents keep two-minute certificates for nginx and for a uvicorn service
using ``trustyard.tls`` (which also reports its loaded bundle), and four kinds of relying
party request continuously from their own agent-written trust files (httpx with
``client_context``, curl with ``ca.crt``, Node.js with ``ca.crt``, Java with the PKCS#12
truststore, a new JVM per batch). Not one request fails across both rotations; the served
chains switch to the new material; while an agent is stopped, adoption is refused naming it,
and proceeds once it is back and has reported; after the root is retired, a client holding
only the old root is refused and one holding the new root is served."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509

from trustyard.errors import ExitCode
from trustyard.testing import free_port, need

from ..agent.helpers import AgentProcess, agent_args, mint, serve, short_ttl_home, wait_for
from ..nginx import nginx_conf, start_nginx, stop_nginx
from ..support import PASSWORD, Server, run_cli
from .relying import CurlLoop, HttpxLoop, JavaLoop, Loop, NodeLoop, compile_java

HERE = Path(__file__).parent
ROTATION = '\n[rotation]\npoll_interval = "1s"\ncheckin_interval = "2s"\ndwell = "4s"\nrenew_window = "3s"\n'
TRUST_PASSWORD = "e2e-truststore-pass"


# -- the rotation, driven as an operator would ------------------------------------------------

def rotate(home: Path, *args: str) -> tuple[int, str, str]:
    """``trustyard rotate ARGS`` as its own process: (exit status, stdout, stderr)."""
    done = subprocess.run([sys.executable, "-m", "trustyard", "rotate", *args, "--home", str(home), "--reason",
                           "end-to-end test"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "TRUSTYARD_PASSWORD": PASSWORD.decode()})
    return done.returncode, done.stdout, done.stderr


def status(home: Path) -> dict:  # type: ignore[type-arg]
    code, out, err = run_cli("rotate", "status", "--home", str(home), "--json")
    assert code == 0, err
    return json.loads(out)  # type: ignore[no-any-return]


def advance(home: Path, to: str, timeout: float = 60) -> None:
    """Wait until ``rotate status`` says the gate to ``to`` is open, then advance."""
    def gate_open() -> bool:
        gate = status(home)["gate"]
        assert gate["next"] == to, gate
        return bool(gate["ok"])

    wait_for(gate_open, timeout=timeout, interval=0.5, what=f"the gate to {to}")
    code, out, err = rotate(home, "advance")
    assert code == 0, out + err
    assert status(home)["rotation"]["state"] == to


def start_rotation(home: Path, kind: str) -> dict:  # type: ignore[type-arg]
    code, out, err = rotate(home, kind)
    assert code == 0, out + err
    return status(home)["rotation"]  # type: ignore[no-any-return]


# -- what is served ---------------------------------------------------------------------------

def served_chain(port: int) -> list[x509.Certificate]:
    """The chain nginx sends (leaf first), as ``openssl s_client -showcerts`` shows it."""
    done = subprocess.run([need("openssl", package="openssl"), "s_client", "-connect", f"127.0.0.1:{port}",
                           "-servername", "edge.internal", "-showcerts"], input="", capture_output=True, text=True,
                          timeout=30)
    blocks = re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", done.stdout, re.S)
    assert blocks, done.stdout + done.stderr
    return [x509.load_pem_x509_certificate(b.encode()) for b in blocks]


def uvicorn_leaf(port: int, cert_dir: Path) -> x509.Certificate:
    """The certificate the uvicorn service presents to a client of ``cert_dir``."""
    import socket

    from trustyard.tls import client_context

    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            client_context(cert_dir).wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def curl_with(cafile: Path, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([need("curl", package="curl"), "-sS", "--cacert", str(cafile), "-o", "/dev/null", url],
                          capture_output=True, text=True, timeout=30)


def cert_at(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificates(path.read_bytes())[0]


# -- the processes ----------------------------------------------------------------------------

class Fleet:
    """The agents of this test, by label, each with its output directory and arguments."""

    def __init__(self, ca: Server, base: Path, password_file: Path) -> None:
        self.ca, self.base, self.password_file = ca, base, password_file
        self.args: dict[str, list[str]] = {}
        self.running: dict[str, AgentProcess] = {}
        self.starts = 0

    def out(self, label: str) -> Path:
        return self.base / label

    def bootstrap(self, label: str, name: str, sans: tuple[str, ...], *extra: str, checkin: str = "2s") -> None:
        token = self.base / f"{label}.token"
        token.write_text(mint(self.ca.home, name, *sans))
        common = ["--ttl", "2m", "--checkin", checkin, "--trust-formats", "pem,p12", "--trust-password-file",
                  str(self.password_file), *(a for san in sans for a in ("--san", san))]
        done = subprocess.run([sys.executable, "-m", "trustyard", "agent",
                               *agent_args(self.ca, self.out(label), name, token, *common), "--once"],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        self.args[label] = agent_args(self.ca, self.out(label), name, token, *common, *extra)

    def start(self, label: str) -> AgentProcess:
        self.starts += 1
        agent = AgentProcess(self.args[label], self.base / f"agent-{label}-{self.starts}.log")
        self.running[label] = agent
        return agent

    def stop(self, label: str) -> int:
        return self.running.pop(label).stop()

    def stop_all(self) -> None:
        for label in list(self.running):
            self.stop(label)

    def logs(self) -> str:
        return "\n".join(f"== {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted(self.base.glob("agent-*.log")))


@pytest.mark.slow
def test_intermediate_then_root_rotation_under_load_with_zero_failed_requests(tmp_path: Path) -> None:
    nginx = need("nginx", package="nginx")
    home = short_ttl_home(tmp_path / "ca", min_ttl="10s", default_ttl="2m")
    with (home / "trustyard.toml").open("a") as toml:
        toml.write(ROTATION)
    old_root = home / "ca" / "root.crt"
    ca = serve(home)
    run_dir = tmp_path / "nginx"
    run_dir.mkdir()
    secret = tmp_path / "trust.pass"
    secret.write_text(TRUST_PASSWORD + "\n")
    fleet = Fleet(ca, tmp_path, secret)
    edge_port, api_port = free_port(), free_port()
    service = None
    service_log = (tmp_path / "service.log").open("wb")
    loops: list[Loop] = []
    try:
        classes = compile_java(tmp_path)
        fleet.bootstrap("edge", "edge.internal", ("edge.internal", "127.0.0.1"), "--reload-signal", "HUP",
                        "--pid-file", str(run_dir / "nginx.pid"), "--verify-endpoint", f"127.0.0.1:{edge_port}")
        fleet.bootstrap("api", "api.internal", ("api.internal", "127.0.0.1"),
                        "--verify-endpoint", f"127.0.0.1:{api_port}")
        fleet.bootstrap("web", "web.internal", ("web.internal",))
        # The Java client's agent checks in less often: stopped, it stays a (non-stale) laggard
        # for 3 intervals, long enough to see adoption refused because of it.
        fleet.bootstrap("java", "java.internal", ("java.internal",), checkin="10s")
        start_nginx(run_dir, nginx_conf(run_dir, edge_port, fleet.out("edge"), worker_connections=256), nginx)
        service = subprocess.Popen([sys.executable, str(HERE / "service.py"), str(fleet.out("api")), str(api_port),
                                    ca.url, str(old_root)], stdout=service_log, stderr=subprocess.STDOUT)
        for label in ("edge", "api", "web", "java"):
            fleet.start(label)
        edge_url, api_url = f"https://127.0.0.1:{edge_port}/", f"https://127.0.0.1:{api_port}/"
        wait_for(lambda: curl_with(fleet.out("web") / "ca.crt", edge_url).returncode == 0, timeout=30,
                 what="nginx")
        wait_for(lambda: _answers(api_url, fleet.out("web")), timeout=30, what="the uvicorn service")
        loops = [HttpxLoop(api_url, fleet.out("web")).start(),
                 CurlLoop(edge_url, fleet.out("edge") / "ca.crt").start(),
                 NodeLoop(edge_url, fleet.out("api") / "ca.crt", tmp_path).start(),
                 JavaLoop(edge_url, fleet.out("java") / "truststore.p12", secret, classes).start()]
        parties = 5  # four agents and the service's own report
        wait_for(lambda: _fleet_size(home) >= parties, timeout=30, what="every party's first check-in")

        # -- the intermediate ------------------------------------------------------------------
        first = start_rotation(home, "intermediate")
        new_inter = cert_at(home / first["paths"]["intermediate_cert"])
        advance(home, "published")
        advance(home, "adopted")
        advance(home, "active")
        advance(home, "retiring")
        advance(home, "retired", timeout=90)
        chain = wait_for(lambda: (c := served_chain(edge_port)) and c[0].issuer == new_inter.subject and c,
                         timeout=30, what="nginx serving a leaf of the new intermediate")
        assert [c.subject for c in chain[1:]] == [new_inter.subject]
        assert uvicorn_leaf(api_port, fleet.out("web")).issuer == new_inter.subject
        assert cert_at(fleet.out("web") / "tls.crt").issuer == new_inter.subject

        # -- the root, with one agent stopped while the new root is published -------------------
        second = start_rotation(home, "root")
        new_root_file = home / second["paths"]["root_cert"]
        newer_inter = cert_at(home / second["paths"]["intermediate_cert"])
        cross = cert_at(home / second["paths"]["cross"])
        assert fleet.stop("java") == 0
        advance(home, "published")

        def only_java_lags() -> bool:
            gate = status(home)["gate"]
            return [p["name"] for p in gate["laggards"]] != [] and all(
                "java.internal" in p["name"] for p in gate["laggards"]) and len(gate["reasons"]) == 1

        wait_for(only_java_lags, timeout=20, interval=0.3, what="the stopped agent as the only laggard")
        code, out, err = rotate(home, "advance")
        assert code == ExitCode.GATE_CLOSED, out + err
        assert "java.internal" in err and "lack bundle version" in err, err
        assert status(home)["rotation"]["state"] == "published"
        fleet.start("java")
        advance(home, "adopted", timeout=30)  # once it has reported the new bundle
        advance(home, "active")
        chain = wait_for(lambda: (c := served_chain(edge_port)) and c[0].issuer == newer_inter.subject and c,
                         timeout=30, what="nginx serving a leaf of the new root's intermediate")
        assert [c.subject for c in chain[1:]] == [newer_inter.subject, cross.subject]  # the cross-certificate too
        wait_for(lambda: uvicorn_leaf(api_port, fleet.out("web")).issuer == newer_inter.subject, timeout=30,
                 what="the uvicorn service presenting a leaf of the new root's intermediate")
        advance(home, "retiring")
        advance(home, "retired", timeout=90)
        # At retired every party is asked to renew: the new leaves come without the cross-certificate.
        chain = wait_for(lambda: (c := served_chain(edge_port)) and len(c) == 2 and c, timeout=30, interval=0.5,
                         what="nginx serving the new chain without the cross-certificate")
        assert chain[1].subject == newer_inter.subject
        time.sleep(2)  # a few more requests of every kind against the final chain

        for loop in loops:
            loop.stop()
        tallies = {loop.tally.name: loop.tally for loop in loops}
        print("requests per client:", tallies)  # shown with -s
        assert {name: t.failures for name, t in tallies.items()} == {name: [] for name in tallies}, fleet.logs()
        assert all(t.ok >= 20 for t in tallies.values()), tallies
        assert next(loop for loop in loops if isinstance(loop, JavaLoop)).batches >= 3

        # A client holding only the old root is refused; one holding the new root is served.
        refused = curl_with(old_root, edge_url)
        assert refused.returncode == 60, refused.stderr  # CURLE_PEER_FAILED_VERIFICATION
        served = curl_with(new_root_file, edge_url)
        assert served.returncode == 0, served.stderr
        bundle = x509.load_pem_x509_certificates((fleet.out("edge") / "ca.crt").read_bytes())
        assert cert_at(old_root) not in bundle and cert_at(new_root_file) in bundle
    finally:
        for loop in loops:
            loop.stop()
        fleet.stop_all()
        if service is not None:
            service.terminate()
            service.wait(10)
        service_log.close()
        stop_nginx(run_dir, nginx)
        ca.stop()


def _answers(url: str, cert_dir: Path) -> bool:
    import httpx

    from trustyard.tls import client_context

    try:
        with httpx.Client(verify=client_context(cert_dir), timeout=5) as client:
            return client.get(url).status_code == 200
    except httpx.HTTPError:
        return False


def _fleet_size(home: Path) -> int:
    code, out, _err = run_cli("fleet", "--home", str(home), "--json")
    return len(json.loads(out)["parties"]) if code == 0 else 0

