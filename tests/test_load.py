"""Concurrency and crashes against a real multi-worker server."""

from __future__ import annotations

import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from trustyard.ca.config import load_config
from trustyard.ca.home import load_authority, open_home_store

from .support import PASSWORD, Server, new_csr, start_server, str_ctx

pytestmark = pytest.mark.slow


def mint_tokens(home: Path, count: int) -> list[str]:
    authority = load_authority(home, PASSWORD, minting=True)
    try:
        return [authority.mint_token("default", f"svc{i}.internal", []) for i in range(count)]
    finally:
        authority.store.close()


def drive(server: Server, tokens: list[str], concurrency: int, stop: threading.Event | None = None,
          received: dict[str, bytes] | None = None) -> tuple[dict[str, bytes], int]:
    """Issue one certificate per token from `concurrency` clients; return serial -> DER received."""
    received = {} if received is None else received
    failures = 0
    lock = threading.Lock()
    chunks = [tokens[i::concurrency] for i in range(concurrency)]

    def worker(chunk: list[str]) -> None:
        nonlocal failures
        with httpx.Client(base_url=server.url, verify=str_ctx(server.root), timeout=60) as client:
            for token in chunk:
                if stop is not None and stop.is_set():
                    return
                name = _name_of(token)
                _, csr = new_csr(name)
                try:
                    response = client.post("/v1/sign", json={"csr": csr.decode(), "token": token})
                except httpx.HTTPError:
                    with lock:
                        failures += 1
                    if stop is not None:
                        return
                    continue
                if response.status_code != 201:
                    with lock:
                        failures += 1
                    continue
                doc = response.json()
                cert = x509.load_pem_x509_certificate(doc["certificate"].encode())
                with lock:
                    received[doc["serial"]] = cert.public_bytes(Encoding.DER)

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, chunks))
    return received, failures


def _name_of(token: str) -> str:
    import jwt

    return jwt.decode(token, options={"verify_signature": False})["sub"]


def test_2000_certificates_from_32_clients_on_2_workers(ca_home: Path) -> None:
    tokens = mint_tokens(ca_home, 2000)
    server = start_server(ca_home, workers=2)
    try:
        received, failures = drive(server, tokens, concurrency=32)
    finally:
        server.stop()
    assert failures == 0
    assert len(received) == 2000  # distinct serials: no duplicates handed out
    store = open_home_store(load_config(ca_home))
    records = {r.serial: r for r in store.list(limit=10000)}
    assert len(records) == 2000
    for serial, der in received.items():
        assert records[serial].status == "issued" and records[serial].der == der
    issues = [e for e in store.audit_entries() if e.action == "certificate.issue"]
    mints = [e for e in store.audit_entries() if e.action == "token.mint"]
    assert sorted(e.target for e in issues) == sorted(received)
    assert len(mints) == 2000
    assert store.verify_audit().ok
    store.close()


# A client whose connection the SIGKILL cuts mid-handshake can leave its socket to the
# garbage collector (inside httpcore); that warning says nothing about the CA's durability.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_sigkill_mid_load_loses_nothing(sqlite_home: Path) -> None:
    tokens = mint_tokens(sqlite_home, 1500)
    server = start_server(sqlite_home, workers=2)
    stop = threading.Event()
    results: list[tuple[dict[str, bytes], int]] = []
    live: dict[str, bytes] = {}
    thread = threading.Thread(target=lambda: results.append(drive(server, tokens, 32, stop, live)))
    thread.start()
    store = open_home_store(load_config(sqlite_home))
    try:
        # kill once a few hundred certificates are out, while requests are in flight
        import time

        deadline = time.monotonic() + 120
        while len(live) < 300 and time.monotonic() < deadline:
            time.sleep(0.05)
        server.stop(signal.SIGKILL)
        stop.set()
        thread.join(120)
    finally:
        server.stop()
    received, _ = results[0]
    assert 300 <= len(received) < 1500
    restarted = start_server(sqlite_home, workers=2)
    try:
        with httpx.Client(base_url=restarted.url, verify=str_ctx(restarted.root)) as client:
            assert client.get("/healthz").json()["status"] == "ok"
    finally:
        restarted.stop()
    assert store.integrity_check() == []
    for serial, der in received.items():
        record = store.get(serial)
        assert record is not None and record.status == "issued" and record.der == der
    assert store.verify_audit().ok
    store.close()
