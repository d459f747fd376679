"""CRLs from a real ``trustyard serve``: a revocation reaches its shard's CRL within the delay,
and OpenSSL and curl refuse the revoked certificate on the strength of that CRL alone."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from trustyard.ca.authority import Authority, Issued
from trustyard.ca.home import load_authority
from trustyard.testing import free_port, need
from trustyard.x509.keys import load_private_key_pem, private_key_pem, signature_hash

from ..support import PASSWORD, Server, start_server
from .helpers import cdp_url, crl_home, issue

pytestmark = pytest.mark.xdist_group("crl-serve")

DELAY = 1.0  # [crl] delay in these tests


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Server, Authority]]:
    port = free_port()
    home = crl_home(tmp_path / "ca", crl={"shards": 2, "delay": f"{DELAY:g}s"}, url=f"https://127.0.0.1:{port}")
    server = start_server(home, port=port)
    authority = load_authority(home, PASSWORD, minting=True)
    yield server, authority
    authority.store.close()
    server.stop()


def _fetch(server: Server, url: str) -> x509.CertificateRevocationList:
    with server.client() as c:
        response = c.get(url.removeprefix(server.url))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pkix-crl"
    return x509.load_der_x509_crl(response.content)


def _wait_listed(server: Server, url: str, serial: int, limit: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < limit:
        with server.client() as c:
            response = c.get(url.removeprefix(server.url))
        assert response.status_code in (200, 404), response.text  # 404: the shard's first CRL is not out yet
        if response.status_code == 200 and x509.load_der_x509_crl(
                response.content).get_revoked_certificate_by_serial_number(serial) is not None:
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"serial {serial:x} not on {url} after {limit}s")


def _three(authority: Authority, *names: str) -> tuple[tuple[Issued, object], ...]:
    """Two certificates in one shard and one in the other (shards = 2)."""
    by_shard: dict[int, list[tuple[Issued, object]]] = {0: [], 1: []}
    while len(by_shard[0]) < 2 or len(by_shard[1]) < 1:
        issued, key = issue(authority, *names)
        by_shard[issued.certificate.serial_number % 2].append((issued, key))
    if len(by_shard[1]) >= 2:
        return by_shard[1][0], by_shard[1][1], by_shard[0][0]
    return by_shard[0][0], by_shard[0][1], by_shard[1][0]


def _write(tmp: Path, name: str, issued: Issued) -> Path:
    path = tmp / name
    path.write_bytes(issued.certificate.public_bytes(Encoding.PEM))
    return path


def _verify(tmp: Path, crl: x509.CertificateRevocationList, leaf: Path, home: Path) -> subprocess.CompletedProcess[str]:
    crl_pem = tmp / f"{leaf.stem}.crl.pem"
    crl_pem.write_bytes(crl.public_bytes(Encoding.PEM))
    return subprocess.run([need("openssl"), "verify", "-crl_check", "-CRLfile", str(crl_pem), "-CAfile",
                           str(home / "ca" / "root.crt"), "-untrusted", str(home / "ca" / "intermediate.crt"),
                           str(leaf)], capture_output=True, text=True, timeout=30)


def test_openssl_crl_check_fails_for_a_revoked_leaf_within_the_delay_and_passes_for_good_ones(
        served: tuple[Server, Authority], tmp_path: Path) -> None:
    server, authority = served
    (revoked, _k1), (neighbour, _k2), (other, _k3) = _three(authority, "svc.internal")
    url = cdp_url(revoked.certificate)
    assert url == cdp_url(neighbour.certificate) != cdp_url(other.certificate)
    assert url.startswith(f"{server.url}/crl/")
    admin = {"Authorization": "Bearer " + (server.home / "admin.token").read_text().strip()}
    with server.client() as c:
        answer = c.post("/v1/revoke", json={"serial": revoked.record.serial, "reason": "keyCompromise"},
                        headers=admin)
    assert answer.status_code == 200, answer.text
    took = _wait_listed(server, url, revoked.certificate.serial_number, limit=DELAY + 5)
    assert took <= DELAY + 2.5  # the delay plus a tick and the fetch
    crl = _fetch(server, url)
    entry = crl.get_revoked_certificate_by_serial_number(revoked.certificate.serial_number)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == x509.ReasonFlags.key_compromise
    home = server.home
    bad = _verify(tmp_path, crl, _write(tmp_path, "revoked.pem", revoked), home)
    assert bad.returncode != 0 and "certificate revoked" in bad.stdout + bad.stderr, bad.stdout + bad.stderr
    same = _verify(tmp_path, crl, _write(tmp_path, "neighbour.pem", neighbour), home)
    assert same.returncode == 0, same.stdout + same.stderr
    theirs = _fetch(server, cdp_url(other.certificate))
    good = _verify(tmp_path, theirs, _write(tmp_path, "other.pem", other), home)
    assert good.returncode == 0, good.stdout + good.stderr
    # One shard's CRL does not vouch for a certificate of another shard (its scope is its URL).
    wrong = _verify(tmp_path, crl, tmp_path / "other.pem", home)
    assert wrong.returncode != 0


def _s_server(tmp: Path, name: str, issued: Issued, key: object, home: Path) -> tuple[subprocess.Popen[bytes], int]:
    (tmp / f"{name}.key").write_bytes(private_key_pem(key, None))  # type: ignore[arg-type]
    _write(tmp, f"{name}.pem", issued)
    port = free_port()
    process = subprocess.Popen([need("openssl"), "s_server", "-accept", f"127.0.0.1:{port}", "-cert",
                                str(tmp / f"{name}.pem"), "-key", str(tmp / f"{name}.key"), "-cert_chain",
                                str(home / "ca" / "intermediate.crt"), "-www", "-quiet"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, port
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError("openssl s_server did not start")


def _root_arl(home: Path) -> x509.CertificateRevocationList:
    root = x509.load_pem_x509_certificate((home / "ca" / "root.crt").read_bytes())
    key = load_private_key_pem((home / "ca" / "root.key").read_bytes(), PASSWORD)
    now = datetime.now(UTC)
    ski = root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (x509.CertificateRevocationListBuilder().issuer_name(root.subject).last_update(now)
            .next_update(now + timedelta(days=1)).add_extension(x509.CRLNumber(1), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
            .sign(key, signature_hash(key)))  # type: ignore[arg-type]


def _curl(port: int, crl_file: Path, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([need("curl"), "-sS", "-o", "/dev/null", "--cacert", str(home / "ca" / "root.crt"),
                           "--crlfile", str(crl_file), "--resolve", f"localhost:{port}:127.0.0.1",
                           f"https://localhost:{port}/"], capture_output=True, text=True, timeout=30)


def test_curl_with_the_crl_refuses_a_revoked_server_and_accepts_a_good_one(
        served: tuple[Server, Authority], tmp_path: Path) -> None:
    server, authority = served
    (revoked, key), (good, good_key), _other = _three(authority, "localhost")
    authority.revoke(revoked.record.serial, "keyCompromise", admin=True)
    _wait_listed(server, cdp_url(revoked.certificate), revoked.certificate.serial_number, limit=DELAY + 5)
    crl = _fetch(server, cdp_url(revoked.certificate))
    home = server.home
    # curl checks every certificate of the path (CRL_CHECK_ALL): the file also holds the root's
    # CRL of intermediates, which the relying party gets from the CA's operator.
    crl_file = tmp_path / "shard.crl.pem"
    crl_file.write_bytes(crl.public_bytes(Encoding.PEM) + _root_arl(home).public_bytes(Encoding.PEM))
    for name, issued, k, ok in (("revoked", revoked, key, False), ("good", good, good_key, True)):
        process, port = _s_server(tmp_path, name, issued, k, home)
        try:
            result = _curl(port, crl_file, home)
        finally:
            process.kill()
            process.wait(5)
        if ok:
            assert result.returncode == 0, result.stderr
        else:
            assert result.returncode == 60 and "revoked" in result.stderr, result.stderr
