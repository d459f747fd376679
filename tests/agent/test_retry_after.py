"""Retry-After from a CA that sheds load, over real HTTP on loopback: ``CAClient`` sends the
request again after Retry-After plus jitter a bounded number of times, then says the CA is busy;
the agent's next renewal attempt comes at Retry-After plus jitter, never earlier."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from trustyard.agent.config import cert_spec
from trustyard.agent.runner import ManagedCert
from trustyard.agent.seams import FileOutput, HTTPBackend, SystemClock
from trustyard.client import CAClient, CAUnavailable
from trustyard.testing import TestCA, pem

BUSY = {"type": "urn:trustyard:error:overloaded", "title": "Overloaded", "status": 503,
        "detail": "the CA is busy"}


class Shedding:
    """A stand-in CA on loopback: answers POSTs from ``script`` (status, Retry-After), the last
    entry repeated, and records when each one came."""

    def __init__(self, script: list[tuple[int, str | None]], issued: dict[str, str] | None = None) -> None:
        self.script, self.issued, self.times = script, issued or {}, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", "0")))
                outer.times.append(time.monotonic())
                status, retry_after = outer.script[min(len(outer.times), len(outer.script)) - 1]
                body = json.dumps(BUSY if status == 503 else outer.issued).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/problem+json" if status == 503 else "application/json")
                if retry_after is not None:
                    self.send_header("Retry-After", retry_after)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.times, self.times[1:], strict=False)]


@contextmanager
def shedding(script: list[tuple[int, str | None]], issued: dict[str, str] | None = None) -> Iterator[Shedding]:
    server = Shedding(script, issued)
    thread = threading.Thread(target=server.httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


def _issued(ca: TestCA) -> dict[str, str]:
    leaf = ca.issue("busy.internal", ttl=timedelta(hours=1))
    return {"serial": "01", "not_before": "2030-01-01T00:00:00Z", "not_after": "2030-01-02T00:00:00Z",
            "certificate": leaf.cert_pem().decode(), "chain": ca.intermediates_pem().decode(),
            "roots": pem(ca.root).decode()}


def test_the_client_retries_after_retry_after_plus_jitter_a_bounded_number_of_times() -> None:
    with (shedding([(503, "1")]) as ca, CAClient(ca.url, verify=False, retries=2) as client,
          pytest.raises(CAUnavailable) as refused):
        client.renew(b"csr", "proof")
    assert len(ca.times) == 3  # the request and two retries, then a clear error
    assert all(1.0 <= gap <= 2.0 + 0.5 for gap in ca.gaps()), ca.gaps()
    assert refused.value.retry_after == 1 and not refused.value.maybe_delivered
    assert "still refused after 3 attempts" in refused.value.detail and "the CA is busy" in refused.value.detail


def test_the_client_gets_its_answer_once_the_ca_admits_it() -> None:
    issued = _issued(TestCA("Busy"))
    with shedding([(429, "1"), (503, "2"), (201, None)], issued) as ca, CAClient(ca.url, verify=False) as client:
        answer = client.renew(b"csr", "proof")
    assert answer.certificate_pem == issued["certificate"] and len(ca.times) == 3
    assert 1.0 <= ca.gaps()[0] <= 2.5 and 2.0 <= ca.gaps()[1] <= 3.5, ca.gaps()


def test_a_long_retry_after_is_not_waited_for_by_the_client() -> None:
    with (shedding([(503, "3600")]) as ca, CAClient(ca.url, verify=False) as client,
          pytest.raises(CAUnavailable) as refused):
        client.renew(b"csr", "proof")
    assert len(ca.times) == 1 and refused.value.retry_after == 3600


def test_the_agent_comes_back_at_retry_after_plus_jitter(tmp_path: Path) -> None:
    """Three renewal attempts refused with 503 Retry-After: 2, then one admitted: each attempt
    came 2 to 3 seconds after the one before (plus scheduling slack), never earlier."""
    test_ca = TestCA("Busy")
    out = tmp_path / "certs"
    test_ca.issue("busy.internal", ttl=timedelta(seconds=30)).write_agent_dir(out)
    root = tmp_path / "root.crt"
    root.write_bytes(pem(test_ca.root))
    with shedding([(503, "2"), (503, "2"), (503, "2"), (201, None)], _issued(test_ca)) as ca:
        backend = HTTPBackend(ca.url, root)
        clock = SystemClock()
        m = ManagedCert(cert_spec({"name": "busy.internal", "out": str(out), "renew_at": "10%"}), backend,
                        FileOutput(out), clock)
        try:
            m.start()
            m.next_at = clock.now()  # due now
            deadline = time.monotonic() + 20
            while m.counters.renewals == 0 and time.monotonic() < deadline:
                if m.due(clock.now()):
                    m.step()
                time.sleep(0.01)
        finally:
            backend.close()
    assert m.counters.renewals == 1 and len(ca.times) == 4, (m.last_error, ca.times)
    assert all(2.0 <= gap <= 3.0 + 0.3 for gap in ca.gaps()), ca.gaps()
    assert len({round(gap, 2) for gap in ca.gaps()}) > 1  # jittered, not a fixed 2 s
