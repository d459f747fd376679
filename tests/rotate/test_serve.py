"""A running ``trustyard serve`` (two workers) through a rotation without a restart: leaves
issued after ``active`` chain to the new intermediate (checked with ``openssl verify``), the
bundle it serves carries the published material, /metrics shows the state's deadline; and the
server's own short-lived certificate is renewed and presented at the next handshake."""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509

from trustyard.ca.config import load_config
from trustyard.ca.home import load_authority, load_key
from trustyard.cli import main
from trustyard.testing import need
from trustyard.x509.keys import KeyType, generate_private_key, private_key_pem
from trustyard.x509.names import parse_name
from trustyard.x509.profiles import LeafSpec, leaf_builder, new_serial, sign
from trustyard.x509.summary import pem_bundle

from ..support import PASSWORD, new_csr, start_server

FAST = '\n[rotation]\npoll_interval = "1s"\ncheckin_interval = "1s"\ndwell = "2s"\nrenew_window = "1s"\n'


def token(home: Path, name: str) -> str:
    authority = load_authority(home, PASSWORD, minting=True)
    try:
        return authority.mint_token("default", name, [name])
    finally:
        authority.store.close()


def sign_over_https(server, home: Path, name: str) -> tuple[x509.Certificate, list[x509.Certificate]]:  # type: ignore[no-untyped-def]
    _key, csr = new_csr(name)
    with server.client() as client:
        answer = client.post("/v1/sign", json={"csr": csr.decode(), "token": token(home, name)})
    assert answer.status_code == 201, answer.text
    doc = answer.json()
    return x509.load_pem_x509_certificate(doc["certificate"].encode()), x509.load_pem_x509_certificates(
        doc["chain"].encode())


def rotate(home: Path, *args: str) -> int:
    return main(["rotate", *args, "--home", str(home), "--reason", "serve test"])


def test_a_running_server_switches_its_signer_at_active_without_a_restart(sqlite_home: Path, tmp_path: Path,
                                                                        monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TRUSTYARD_PASSWORD", PASSWORD.decode())
    with (sqlite_home / "trustyard.toml").open("a") as toml:
        toml.write(FAST)
    server = start_server(sqlite_home, workers=2)
    try:
        old_leaf, _old_chain = sign_over_https(server, sqlite_home, "a.internal")
        assert rotate(sqlite_home, "intermediate") == 0
        assert rotate(sqlite_home, "advance") == 0  # published
        new_inter = x509.load_pem_x509_certificate((sqlite_home / "ca/rotations/1/intermediate.crt").read_bytes())
        assert rotate(sqlite_home, "advance") == 5  # the dwell has not passed: refused, exit 5
        time.sleep(2.2)
        assert rotate(sqlite_home, "advance") == 0  # adopted
        before_switch, _ = sign_over_https(server, sqlite_home, "b.internal")
        assert before_switch.issuer == old_leaf.issuer
        assert rotate(sqlite_home, "advance") == 0  # active
        time.sleep(1.5)  # every worker polls the rotations table each second
        with server.client() as client:
            assert new_inter.subject.rfc4514_string() in _subjects(client.get("/v1/roots").text)
            metrics = client.get("/metrics").text
        assert 'trustyard_rotation_state_deadline_timestamp_seconds{rotation="intermediate-1",state="active"}' \
            in metrics
        root = sqlite_home / "ca" / "root.crt"
        for i in range(4):  # both workers: every new leaf chains to the new intermediate
            leaf, chain = sign_over_https(server, sqlite_home, f"n{i}.internal")
            assert leaf.issuer == new_inter.subject and chain == [new_inter]
            (tmp_path / "leaf.pem").write_text(pem_bundle([leaf]))
            (tmp_path / "chain.pem").write_text(pem_bundle(chain))
            result = subprocess.run([need("openssl", package="openssl"), "verify", "-CAfile", str(root), "-untrusted",
                                     str(tmp_path / "chain.pem"), str(tmp_path / "leaf.pem")],
                                    capture_output=True, text=True, timeout=30)
            assert result.returncode == 0, result.stdout + result.stderr
        assert server.process.poll() is None  # the same server process throughout
    finally:
        server.stop()


def _subjects(pem: str) -> set[str]:
    return {c.subject.rfc4514_string() for c in x509.load_pem_x509_certificates(pem.encode())}


def short_lived_server_certificate(home: Path) -> x509.Certificate:
    """Replace server/tls.crt with one already past 2/3 of its two-minute life."""
    config = load_config(home)
    root = x509.load_pem_x509_certificate(config.path(config.root_cert).read_bytes())
    root_key = load_key(config, config.root_key, PASSWORD)
    key = generate_private_key(KeyType.EC_P256)
    now = datetime.now(UTC)
    cert = sign(leaf_builder(LeafSpec(public_key=key.public_key(), names=(parse_name("localhost"),  # type: ignore[arg-type]
                                                                        parse_name("127.0.0.1")),
                                      not_before=now - timedelta(seconds=80), not_after=now + timedelta(seconds=40),
                                      serial=new_serial(), eku=("serverAuth",), common_name="localhost"), root),
                root_key)
    config.path(config.tls_key).write_bytes(private_key_pem(key, PASSWORD))
    config.path(config.tls_cert).write_bytes(pem_bundle([cert]).encode())
    return cert


def presented(port: int, root: Path) -> x509.Certificate:
    """The certificate the server presents in a fresh, verified handshake."""
    context = ssl.create_default_context(cafile=str(root))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def test_the_server_renews_its_own_certificate_and_new_handshakes_present_it(sqlite_home: Path) -> None:
    with (sqlite_home / "trustyard.toml").open("a") as toml:
        toml.write(FAST)
    short = short_lived_server_certificate(sqlite_home)
    server = start_server(sqlite_home, workers=2)
    root = sqlite_home / "ca" / "root.crt"
    try:
        deadline = time.monotonic() + 12
        seen = presented(server.port, root)
        while seen.serial_number == short.serial_number and time.monotonic() < deadline:
            time.sleep(0.3)
            seen = presented(server.port, root)
        assert seen.serial_number != short.serial_number, "the server still presents the short-lived certificate"
        assert seen.not_valid_after_utc > short.not_valid_after_utc
        for _ in range(6):  # every worker presents the renewed certificate, verified against the root
            assert presented(server.port, root).serial_number == seen.serial_number
        with server.client() as client:
            assert client.get("/healthz").status_code == 200
        assert server.process.poll() is None
        text = (sqlite_home / "server" / "tls.crt").read_text()
        assert x509.load_pem_x509_certificates(text.encode())[0].serial_number == seen.serial_number
    finally:
        server.stop()
