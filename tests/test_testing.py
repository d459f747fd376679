"""trustyard.testing, the test PKI users get with trustyard: real handshakes on loopback and the
real openssl verify accept what it issues and refuse the broken variants."""

from __future__ import annotations

import datetime as dt
import os
import socket
import ssl
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography import x509

from trustyard.testing import Leaf, TestCA, free_port, need, self_signed
from trustyard.x509 import keys


@contextmanager
def tls_server(leaf: Leaf, tmp: Path, client_ca: bytes | None = None) -> Iterator[tuple[int, list[str]]]:
    """A TLS server on 127.0.0.1 that presents ``leaf`` (with its chain) and records how each handshake
    ended; with ``client_ca`` it requires a client certificate from that CA."""
    crt, key = leaf.write_pair(tmp / "server")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(crt), str(key))
    if client_ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=client_ca.decode())
    listener = socket.create_server(("127.0.0.1", 0))
    outcomes: list[str] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            try:
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"hello")
                    outcomes.append("ok")
            except (ssl.SSLError, OSError) as exc:
                outcomes.append(type(exc).__name__)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], outcomes
    finally:
        thread.join(timeout=10)
        listener.close()


def connect(port: int, name: str, trust: bytes, client: Leaf | None = None, tmp: Path | None = None) -> bytes:
    ctx = ssl.create_default_context(cadata=trust.decode())
    if client is not None and tmp is not None:
        crt, key = client.write_pair(tmp / "client")
        ctx.load_cert_chain(str(crt), str(key))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname=name) as tls:
        return tls.recv(5)


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA("Shop")


def test_a_client_trusting_the_ca_completes_the_handshake(ca: TestCA, tmp_path: Path) -> None:
    with tls_server(ca.issue("localhost", "127.0.0.1"), tmp_path) as (port, outcomes):
        assert connect(port, "localhost", ca.pem()) == b"hello"
    assert outcomes == ["ok"]


def test_mutual_tls_with_a_client_certificate_from_the_same_ca(ca: TestCA, tmp_path: Path) -> None:
    client = ca.issue("spiffe://shop.internal/orders")
    with tls_server(ca.issue("localhost"), tmp_path, client_ca=ca.pem()) as (port, outcomes):
        assert connect(port, "localhost", ca.pem(), client, tmp_path) == b"hello"
    assert outcomes == ["ok"]


def test_the_wrong_name_fails(ca: TestCA, tmp_path: Path) -> None:
    with tls_server(ca.issue("other.internal"), tmp_path) as (port, _), \
            pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        connect(port, "localhost", ca.pem())


def test_an_expired_leaf_fails(ca: TestCA, tmp_path: Path) -> None:
    leaf = ca.expired("localhost")
    assert leaf.cert.not_valid_after_utc < dt.datetime.now(dt.UTC)
    with tls_server(leaf, tmp_path) as (port, _), \
            pytest.raises(ssl.SSLCertVerificationError, match="certificate has expired"):
        connect(port, "localhost", ca.pem())


def test_a_leaf_not_valid_yet_fails(ca: TestCA, tmp_path: Path) -> None:
    with tls_server(ca.not_yet_valid("localhost"), tmp_path) as (port, _), \
            pytest.raises(ssl.SSLCertVerificationError, match="certificate is not yet valid"):
        connect(port, "localhost", ca.pem())


@pytest.mark.parametrize("kind", ["other-ca", "self-signed"])
def test_a_certificate_from_elsewhere_fails(kind: str, ca: TestCA, tmp_path: Path) -> None:
    leaf = TestCA("Elsewhere").issue("localhost") if kind == "other-ca" else self_signed("localhost")
    with tls_server(leaf, tmp_path) as (port, _), \
            pytest.raises(ssl.SSLCertVerificationError, match=r"unable to get local issuer certificate|self.signed"):
        connect(port, "localhost", ca.pem())


def test_a_server_that_forgets_the_intermediate_fails(ca: TestCA, tmp_path: Path) -> None:
    crt, key = ca.issue("localhost").write_pair(tmp_path / "server", chain=False)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(crt), str(key))
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn, pytest.raises((ssl.SSLError, OSError)):
            ctx.wrap_socket(conn, server_side=True)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer certificate"):
        connect(listener.getsockname()[1], "localhost", ca.pem())
    thread.join(timeout=10)
    listener.close()


@pytest.mark.parametrize("intermediates", [1, 2])
def test_openssl_verify_accepts_the_chain(intermediates: int, tmp_path: Path) -> None:
    ca = TestCA("Chain", intermediates=intermediates, key_type=keys.KeyType.RSA_2048)
    leaf = ca.issue("orders.internal", ttl=dt.timedelta(hours=2))
    assert len(leaf.chain) == intermediates
    assert [c.subject.rfc4514_string() for c in leaf.chain] == (
        ["CN=Chain Intermediate"] if intermediates == 1 else ["CN=Chain Intermediate 2", "CN=Chain Intermediate"])
    out = leaf.write_agent_dir(tmp_path / "out")
    (tmp_path / "leaf.pem").write_bytes(leaf.cert_pem())
    (tmp_path / "untrusted.pem").write_bytes(ca.intermediates_pem())
    result = subprocess.run([need("openssl"), "verify", "-CAfile", str(out / "ca.crt"), "-untrusted",
                             str(tmp_path / "untrusted.pem"), "-verify_hostname", "orders.internal",
                             str(tmp_path / "leaf.pem")], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip().endswith(": OK"), result
    wrong = subprocess.run([need("openssl"), "verify", "-CAfile", str(out / "ca.crt"), "-untrusted",
                            str(tmp_path / "untrusted.pem"), "-verify_hostname", "billing.internal",
                            str(tmp_path / "leaf.pem")], capture_output=True, text=True)
    assert wrong.returncode != 0 and "hostname mismatch" in wrong.stdout + wrong.stderr


def test_write_agent_dir_is_the_agent_layout(ca: TestCA, tmp_path: Path) -> None:
    leaf = ca.issue("orders.internal", key_type=keys.KeyType.ED25519)
    out = leaf.write_agent_dir(tmp_path / "orders")
    assert sorted(p.name for p in out.iterdir()) == ["ca.crt", "tls.crt", "tls.key"]
    assert stat.S_IMODE((out / "tls.key").stat().st_mode) == 0o600
    served = x509.load_pem_x509_certificates((out / "tls.crt").read_bytes())
    assert served == [leaf.cert, ca.cert]  # leaf then intermediate, no root
    assert x509.load_pem_x509_certificates((out / "ca.crt").read_bytes()) == [ca.root]
    assert keys.key_type_of(keys.load_private_key_pem((out / "tls.key").read_bytes())) is keys.KeyType.ED25519
    other = TestCA("Next")
    leaf.write_agent_dir(out, bundle=ca.bundle(other))  # a rotation: both roots trusted
    assert x509.load_pem_x509_certificates((out / "ca.crt").read_bytes()) == [ca.root, other.root]


def test_need_fails_naming_the_debian_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("TRUSTYARD_TESTING_ALLOW_SKIP", raising=False)
    with pytest.raises(pytest.fail.Exception, match=r"keytool is not installed: apt-get install default-jdk-headless"):
        need("keytool")
    monkeypatch.setenv("TRUSTYARD_TESTING_ALLOW_SKIP", "1")
    with pytest.raises(pytest.skip.Exception, match="keytool is not installed"):
        need("keytool")


def test_free_port_is_free_on_loopback() -> None:
    port = free_port()
    with socket.create_server(("127.0.0.1", port)):
        pass


def test_usable_without_pytest(tmp_path: Path) -> None:
    """A unittest suite can import it: no pytest at import time, and need() raises unittest's skip."""
    code = ("import sys, unittest; import trustyard.testing as t; assert 'pytest' not in sys.modules\n"
            "ca = t.TestCA(); ca.issue('a.internal').write_agent_dir(sys.argv[1])\n"
            "try: t.need('no-such-tool-i15')\n"
            "except unittest.SkipTest as e: print('skip', e)\n")
    env = {**os.environ, "TRUSTYARD_TESTING_ALLOW_SKIP": "1"}
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("skip no-such-tool-i15 is not installed")
    assert (tmp_path / "tls.key").exists()
