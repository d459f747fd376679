"""``openssl ocsp`` against a real ``trustyard serve``: good, revoked (reason and time) after
``trustyard revoke``, unknown, an issuer that is not ours, and a flood of garbage that leaves a
good request fast."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

from trustyard.testing import TestCA, free_port, need

from ..support import Server, run_cli, start_server
from .helpers import ocsp_home, parse, request_der


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    port = free_port()
    home = ocsp_home(tmp_path_factory.mktemp("ocsp-ca") / "ca", url=f"https://127.0.0.1:{port}")
    served = start_server(home, workers=2, port=port)
    try:
        yield served
    finally:
        served.stop()


def issue(server: Server, out: Path, name: str = "orders.internal") -> str:
    code, stdout, err = run_cli("issue", name, "--home", str(server.home), "--out", str(out), "--json")
    assert code == 0, err
    return json.loads(stdout)["serial"]


def openssl_ocsp(server: Server, cert: Path, issuer: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [need("openssl"), "ocsp", "-issuer", str(issuer or server.home / "ca" / "intermediate.crt"), "-cert",
         str(cert), "-url", f"{server.url}/ocsp", "-CAfile", str(server.root)],
        capture_output=True, text=True, timeout=30)


def test_openssl_sees_good_then_revoked_with_reason_and_time(server: Server, tmp_path: Path) -> None:
    serial = issue(server, tmp_path / "leaf")
    cert = tmp_path / "leaf" / "tls.crt"
    aia = x509.load_pem_x509_certificate(cert.read_bytes()).extensions.get_extension_for_class(
        x509.AuthorityInformationAccess).value
    assert [d.access_location.value for d in aia] == [f"{server.url}/ocsp"]
    good = openssl_ocsp(server, cert)
    assert good.returncode == 0, good.stderr
    assert f"{cert}: good" in good.stdout and "Response verify OK" in good.stderr
    code, _out, err = run_cli("revoke", serial, "--reason", "keyCompromise", "--ca-url", server.url,
                              "--root", str(server.root), "--home", str(server.home))
    assert code == 0, err
    revoked = openssl_ocsp(server, cert)  # the worker that revoked drops its answer at once; the other polls
    deadline = time.monotonic() + 3
    while f"{cert}: revoked" not in revoked.stdout and time.monotonic() < deadline:
        time.sleep(0.2)
        revoked = openssl_ocsp(server, cert)
    assert f"{cert}: revoked" in revoked.stdout, revoked.stdout + revoked.stderr
    assert "Reason: keyCompromise" in revoked.stdout and "Revocation Time:" in revoked.stdout
    assert "Response verify OK" in revoked.stderr


def test_a_revocation_on_another_process_reaches_every_worker_within_the_poll_bound(server: Server,
                                                                                   tmp_path: Path) -> None:
    serial = issue(server, tmp_path / "leaf")
    cert = tmp_path / "leaf" / "tls.crt"
    for _ in range(4):  # both workers hold a signed "good"
        assert f"{cert}: good" in openssl_ocsp(server, cert).stdout
    code, _out, err = run_cli("revoke", serial, "--reason", "superseded", "--home", str(server.home))
    assert code == 0, err
    time.sleep(2.5)  # POLL_SECONDS (1 s) and a tick's work, with room
    for _ in range(4):
        answer = openssl_ocsp(server, cert)
        assert f"{cert}: revoked" in answer.stdout and "Reason: superseded" in answer.stdout, answer.stdout


def test_openssl_gets_unknown_for_a_serial_this_ca_never_issued(server: Server) -> None:
    serial = TestCA("Elsewhere").issue("orders.internal").cert.serial_number  # another CA's serial
    answer = subprocess.run(
        [need("openssl"), "ocsp", "-issuer", str(server.home / "ca" / "intermediate.crt"), "-serial",
         hex(serial), "-url", f"{server.url}/ocsp", "-CAfile", str(server.root)],
        capture_output=True, text=True, timeout=30)
    assert f"{hex(serial)}: unknown" in answer.stdout, answer.stdout + answer.stderr
    assert "Response verify OK" in answer.stderr


def test_openssl_gets_unauthorized_for_an_issuer_that_is_not_ours(server: Server, tmp_path: Path) -> None:
    other = TestCA("Elsewhere")
    cert, issuer = tmp_path / "other.crt", tmp_path / "other-issuer.crt"
    cert.write_bytes(other.issue("orders.internal").cert.public_bytes(Encoding.PEM))
    issuer.write_bytes(other.cert.public_bytes(Encoding.PEM))
    answer = openssl_ocsp(server, cert, issuer)
    assert "unauthorized (6)" in answer.stdout + answer.stderr


def test_a_flood_of_garbage_gets_error_statuses_and_leaves_a_good_request_fast(server: Server,
                                                                               tmp_path: Path) -> None:
    issue(server, tmp_path / "leaf")
    leaf = x509.load_pem_x509_certificate((tmp_path / "leaf" / "tls.crt").read_bytes())
    inter = x509.load_pem_x509_certificate((server.home / "ca" / "intermediate.crt").read_bytes())
    good = request_der(leaf, inter)
    bodies = [b"", b"garbage" * 50, b"\x30\x82\xff\xff" + b"\x00" * 100, b"\x30" * 9000, good[:-3], b"A" * 12_000]

    def flood(worker: int) -> list[int]:
        statuses = []
        with server.client() as client:
            for i in range(100):
                answer = client.post("/ocsp", content=bodies[(worker + i) % len(bodies)],
                                     headers={"content-type": "application/ocsp-request"})
                assert answer.status_code == 200
                statuses.append(parse(answer.content).response_status.value)
        return statuses

    with ThreadPoolExecutor(5) as pool:
        statuses = [s for batch in pool.map(flood, range(5)) for s in batch]
    assert len(statuses) == 500
    assert set(statuses) == {ocsp.OCSPResponseStatus.MALFORMED_REQUEST.value}
    with server.client() as client:
        client.post("/ocsp", content=good)  # sign it once
        started = time.monotonic()
        answer = client.post("/ocsp", content=good)
        elapsed = time.monotonic() - started
    assert parse(answer.content).certificate_status == ocsp.OCSPCertStatus.GOOD
    assert elapsed < 0.5, elapsed
    # trustyard: allow-insecure a raw client for an oversized body; the test CA is not the point here
    with httpx.Client(verify=False, timeout=10) as raw:  # a 10 KB cap: the body past it is never read
        big = raw.post(f"{server.url}/ocsp", content=b"\x00" * 200_000)
        assert big.status_code == 200
        assert parse(big.content).response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST
