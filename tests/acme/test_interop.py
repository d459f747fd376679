"""Real ACME clients, unchanged, against a real ``trustyard serve`` (2 workers) on loopback.

certbot (PyPI) and lego (Debian): register, issue with http-01, renew, revoke, and a second
revoke that fails with alreadyRevoked; lego also dns-01 and tls-alpn-01; acmetool (Debian)
issues once. Each runs twice: plainly, and with TRUSTYARD_ACME_NONCE_REJECT=10 (the server
refuses 10% of valid nonces, as Pebble's PEBBLE_WFE_NONCEREJECT does; a nonce handed out with
a refusal is never refused, so a client that retries once always gets through).

The CA resolves every name through pebble-challtestsrv's DNS (all names -> 127.0.0.1) and
validates on the port the client listens on (TRUSTYARD_ACME_HTTP_PORT / _TLS_PORT).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomli_w
import yaml
from cryptography import x509

from trustyard.ca.config import load_config
from trustyard.ca.home import InitOptions, init_home
from trustyard.store import open_store
from trustyard.testing import free_port, need

from ..support import PASSWORD, Server, start_server
from .challtestsrv import ChallTestSrv, start_challtestsrv

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("acme-interop")]
NONCE_REJECT = [pytest.param("0", id="nonces-ok"), pytest.param("10", id="nonce-reject-10pct")]


@pytest.fixture
def challtest() -> Iterator[ChallTestSrv]:
    srv = start_challtestsrv()
    yield srv
    srv.stop()


class Ca:
    def __init__(self, tmp: Path, challtest: ChallTestSrv, reject: str, **ports: int) -> None:
        self.home = tmp / "ca"
        init_home(self.home, PASSWORD, InitOptions(allow=("*.internal",)))
        path = self.home / "trustyard.toml"
        doc = tomllib.loads(path.read_text())
        doc["acme"] = {"allow_targets": ["127.0.0.0/8"], "validation_timeout": 10.0}
        for provisioner in doc["provisioners"]:
            provisioner["wildcards"] = True  # lego's *.dns.internal
        path.write_text(tomli_w.dumps(doc))
        self.http_port, self.tls_port = ports.get("http", free_port()), ports.get("tls", free_port())
        self.server: Server = start_server(self.home, workers=2, env={
            "TRUSTYARD_ACME_HTTP_PORT": str(self.http_port), "TRUSTYARD_ACME_TLS_PORT": str(self.tls_port),
            "TRUSTYARD_ACME_RESOLVER": challtest.resolver, "TRUSTYARD_ACME_NONCE_REJECT": reject})
        self.directory = self.server.url + "/acme/acme/directory"
        self.root = str(self.server.root)

    def status(self, cert_pem: Path) -> str:
        cert = x509.load_pem_x509_certificates(cert_pem.read_bytes())[0]
        store = open_store(load_config(self.home).db_url, migrate=False)
        try:
            record = store.get(format(cert.serial_number, "x"))
        finally:
            store.close()
        assert record is not None and record.provisioner == "acme"
        return record.status

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture
def make_ca(tmp_path: Path, challtest: ChallTestSrv) -> Iterator[object]:
    made: list[Ca] = []

    def make(reject: str, **ports: int) -> Ca:
        made.append(Ca(tmp_path, challtest, reject, **ports))
        return made[-1]

    yield make
    for ca in made:
        ca.stop()


def run(args: list[str], env: dict[str, str], ok: bool = True, timeout: int = 180) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout)
    if ok and result.returncode != 0:
        raise AssertionError(f"{args[0]} exited {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


# -- certbot ---------------------------------------------------------------------------------------

CERTBOT = [sys.executable, "-c", "import sys; from certbot.main import main; sys.exit(main())"]


@pytest.mark.parametrize("reject", NONCE_REJECT)
def test_certbot(make_ca, tmp_path: Path, reject: str) -> None:  # type: ignore[no-untyped-def]
    ca = make_ca(reject)
    dirs = ["--config-dir", str(tmp_path / "cb/config"), "--work-dir", str(tmp_path / "cb/work"),
            "--logs-dir", str(tmp_path / "cb/logs")]
    common = [*dirs, "--non-interactive", "--server", ca.directory]
    env = {"REQUESTS_CA_BUNDLE": ca.root}
    run([*CERTBOT, "register", *common, "--agree-tos", "--register-unsafely-without-email"], env)
    run([*CERTBOT, "certonly", *common, "--standalone", "--http-01-port", str(ca.http_port),
         "--http-01-address", "127.0.0.1", "-d", "web.internal", "--key-type", "ecdsa"], env)
    live = tmp_path / "cb/config/live/web.internal"
    first = x509.load_pem_x509_certificate((live / "cert.pem").read_bytes())
    assert ca.status(live / "cert.pem") == "issued"
    run([*CERTBOT, "renew", *dirs, "--non-interactive", "--force-renewal", "--no-random-sleep-on-renew"], env)
    second = x509.load_pem_x509_certificate((live / "cert.pem").read_bytes())
    assert second.serial_number != first.serial_number
    run([*CERTBOT, "revoke", *common, "--cert-path", str(live / "cert.pem"), "--no-delete-after-revoke",
         "--reason", "superseded"], env)
    assert ca.status(live / "cert.pem") == "revoked"
    again = run([*CERTBOT, "revoke", *common, "--cert-path", str(live / "cert.pem"), "--no-delete-after-revoke"],
                env, ok=False)
    assert again.returncode != 0 and "alreadyRevoked" in again.stdout + again.stderr + _logs(tmp_path / "cb/logs")


def _logs(path: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in path.glob("*.log*"))


# -- lego ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("reject", NONCE_REJECT)
def test_lego_http01_renew_revoke(make_ca, tmp_path: Path, reject: str) -> None:  # type: ignore[no-untyped-def]
    lego = need("lego")
    ca = make_ca(reject)
    base = [lego, "--server", ca.directory, "--email", "ops@example.internal", "--accept-tos",
            "--path", str(tmp_path / "lego"), "--domains", "lego.internal", "--key-type", "ec256",
            "--http", "--http.port", f"127.0.0.1:{ca.http_port}"]
    env = {"LEGO_CA_CERTIFICATES": ca.root}
    run([*base, "run"], env)
    crt = tmp_path / "lego/certificates/lego.internal.crt"
    first = x509.load_pem_x509_certificates(crt.read_bytes())[0]
    assert ca.status(crt) == "issued"
    run([*base, "renew", "--days", "400", "--no-random-sleep"], env)
    second = x509.load_pem_x509_certificates(crt.read_bytes())[0]
    assert second.serial_number != first.serial_number
    run([*base, "revoke", "--keep"], env)
    assert ca.status(crt) == "revoked"
    again = run([*base, "revoke", "--keep"], env, ok=False)
    assert again.returncode != 0 and "alreadyRevoked" in again.stdout + again.stderr


@pytest.mark.parametrize("reject", NONCE_REJECT)
def test_lego_dns01_and_tls_alpn01(make_ca, tmp_path: Path, challtest: ChallTestSrv, reject: str) -> None:  # type: ignore[no-untyped-def]
    lego = need("lego")
    ca = make_ca(reject)
    hook = tmp_path / "dns-hook.sh"
    hook.write_text("#!/bin/sh\n"  # lego's exec provider: $1 = present|cleanup, $2 = fqdn, $3 = value
                    f'[ "$1" = present ] && exec curl -fsS -X POST -d "{{\\"host\\":\\"$2\\",\\"value\\":\\"$3\\"}}" '
                    f"http://127.0.0.1:{challtest.management}/set-txt\nexit 0\n")
    hook.chmod(0o755)
    env = {"LEGO_CA_CERTIFICATES": ca.root, "EXEC_PATH": str(hook), "EXEC_PROPAGATION_TIMEOUT": "30",
           "EXEC_POLLING_INTERVAL": "1", "EXEC_SEQUENCE_INTERVAL": "1"}
    common = [lego, "--server", ca.directory, "--email", "ops@example.internal", "--accept-tos",
              "--path", str(tmp_path / "lego"), "--key-type", "ec256"]
    run([*common, "--domains", "*.dns.internal", "--domains", "dns.internal", "--dns", "exec",
         "--dns.resolvers", challtest.resolver, "--dns.disable-cp", "run"], env)
    wildcard = tmp_path / "lego/certificates/_.dns.internal.crt"
    sans = x509.load_pem_x509_certificates(wildcard.read_bytes())[0].extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert sorted(sans) == ["*.dns.internal", "dns.internal"] and ca.status(wildcard) == "issued"
    run([*common, "--domains", "alpn.internal", "--tls", "--tls.port", f"127.0.0.1:{ca.tls_port}", "run"], env)
    assert ca.status(tmp_path / "lego/certificates/alpn.internal.crt") == "issued"


# -- acmetool --------------------------------------------------------------------------------------

@contextlib.contextmanager
def port_80_held_on_loopback() -> Iterator[None]:
    """Keep acmetool off the machine's other interfaces: besides 127.0.0.1:402, it also tries
    ``:80`` on every interface, and a listener already on 127.0.0.1:80 makes that bind fail.
    If this one cannot bind either (no privilege, port taken), neither can acmetool's."""
    holder = socket.socket()
    try:
        holder.bind(("127.0.0.1", 80))
        holder.listen()
    except OSError:
        pass
    try:
        yield
    finally:
        holder.close()


@pytest.mark.parametrize("reject", NONCE_REJECT)
def test_acmetool_issues(make_ca, tmp_path: Path, reject: str) -> None:  # type: ignore[no-untyped-def]
    acmetool = need("acmetool")
    # acmetool's "listen" method serves the challenge on 127.0.0.1:402, where the CA looks.
    ca = make_ca(reject, http=402)
    state = tmp_path / "acmetool"
    responses = tmp_path / "responses.yaml"
    responses.write_text(
        f'"acmetool-quickstart-choose-server": "{ca.directory}"\n'
        '"acmetool-quickstart-choose-method": "listen"\n'
        '"acme-enter-email": "ops@example.internal"\n'
        '"acmetool-quickstart-complete": true\n'
        '"acmetool-quickstart-install-cronjob": false\n'
        '"acmetool-quickstart-install-haproxy-script": false\n'
        '"acmetool-quickstart-install-redirector-systemd": false\n'
        '"acmetool-quickstart-key-type": "ecdsa"\n'
        '"acmetool-quickstart-ecdsa-curve": "nistp256"\n')
    env = {"SSL_CERT_FILE": ca.root}
    args = [acmetool, "--batch", "--state", str(state), "--hooks", str(tmp_path / "hooks"),
            "--response-file", str(responses)]
    run([*args, "quickstart"], env)
    # acmetool first fetches its own challenge through the system resolver, where *.internal
    # names do not exist here; the CA itself resolves them through challtestsrv.
    target = state / "conf/target"
    conf = yaml.safe_load(target.read_text()) or {}
    conf.setdefault("request", {}).setdefault("challenge", {})["http-self-test"] = False
    target.write_text(yaml.safe_dump(conf))
    with port_80_held_on_loopback():
        run([*args, "want", "tool.internal"], env)
    crt = state / "live/tool.internal/cert"
    assert ca.status(crt) == "issued"
