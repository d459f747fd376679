"""OCSP and CRL endpoints stay fast under a flood of garbage (bounded work per request): while
many clients of a real ``trustyard serve`` send random bytes to /ocsp (up to and over its size
limit), malformed base64 GETs, bodies sent a byte at a time and random /crl/ paths, good OCSP
and CRL requests keep being answered correctly and quickly; garbage gets OCSP error statuses,
404, 408, never a 500; and a body over the limit is refused without being read."""

from __future__ import annotations

import base64
import random
import socket
import ssl
import threading
import time
import tomllib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import tomli_w
from cryptography import x509
from cryptography.x509 import ocsp

from trustyard.ca.home import load_authority
from trustyard.testing import free_port

from ..crl.helpers import cdp_url
from ..crl.helpers import issue as issue_in_process
from ..support import PASSWORD, Server, start_server
from .helpers import ocsp_home, parse, request_der

pytestmark = pytest.mark.xdist_group("ocsp-flood")

BODY_TIMEOUT = 2.0  # [server] body_timeout and header_timeout here


def _home(base: Path, port: int, timeouts: bool) -> Path:
    home = ocsp_home(base / "ca", url=f"https://127.0.0.1:{port}")
    doc = tomllib.loads((home / "trustyard.toml").read_text())
    for prov in doc["provisioners"]:
        prov["crl"] = True
    doc["crl"] = {"shards": 2, "delay": "1s"}
    if timeouts:
        doc["server"].update(header_timeout=f"{BODY_TIMEOUT:g}s", body_timeout=f"{BODY_TIMEOUT:g}s")
    (home / "trustyard.toml").write_text(tomli_w.dumps(doc))
    return home


@pytest.fixture(scope="module")
def default_limits(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """serve with the default deadlines (a body may take 30 s)."""
    port = free_port()
    server = start_server(_home(tmp_path_factory.mktemp("limits"), port, timeouts=False), port=port)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, object]]]:
    """serve (2 workers) with CRLs and OCSP on, one good and one revoked certificate, and the
    revoked one's CRL published."""
    port = free_port()
    home = _home(tmp_path_factory.mktemp("flood"), port, timeouts=True)
    authority = load_authority(home, PASSWORD, minting=True)
    good, _ = issue_in_process(authority, "good.internal")
    bad, _ = issue_in_process(authority, "bad.internal")
    authority.revoke(bad.record.serial, "keyCompromise", admin=True)
    inter = authority.material.signer.certificate
    authority.store.close()
    server = start_server(home, workers=2, port=port)
    try:
        crl = cdp_url(bad.certificate).removeprefix(server.url)
        with server.client() as client:  # the first generation round runs at start; give it a moment
            deadline = time.monotonic() + 10
            while client.get(crl).status_code != 200 and time.monotonic() < deadline:
                time.sleep(0.2)
        yield server, {"good": request_der(good.certificate, inter), "revoked": request_der(bad.certificate, inter),
                       "revoked_serial": bad.certificate.serial_number, "crl": crl}
    finally:
        server.stop()


def _tls(server: Server) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(server.root))
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return context.wrap_socket(raw, server_hostname="127.0.0.1")


def _read_response(sock: ssl.SSLSocket) -> tuple[int, bytes]:
    """One HTTP/1.1 response with a Content-Length: (status, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before a response")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in lines if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(65536)
    return int(lines[0].split()[1]), body


def _closed_within(sock: ssl.SSLSocket, seconds: float) -> tuple[bool, int]:
    """Keep sending body bytes until the server ends the connection or ``seconds`` pass:
    (ended, bytes sent meanwhile)."""
    sent, chunk = 0, b"\x00" * 65536
    sock.settimeout(0.2)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            sent += sock.send(chunk)
        except (OSError, ssl.SSLError):
            return True, sent
        try:
            if sock.recv(1) == b"":
                return True, sent
        except (TimeoutError, ssl.SSLWantReadError):
            pass
        except (OSError, ssl.SSLError):
            return True, sent
    return False, sent


@pytest.mark.parametrize("method,path,ctype", [("POST", "/ocsp", "application/ocsp-request"),
                                               ("POST", "/v1/sign", "application/json"),
                                               ("GET", "/crl/0123456789abcdef/1.crl", "application/octet-stream")])
def test_a_body_over_the_limit_is_refused_without_reading_the_rest(default_limits: Server, method: str, path: str,
                                                                   ctype: str) -> None:
    """A request announcing 100 MB gets its answer (OCSP malformedRequest, 400 bodyTooLarge, 404)
    after its first 16 KB, and the server then ends the connection instead of reading and
    discarding the rest until the 30 s body deadline: a client that keeps sending is cut off
    within seconds."""
    server = default_limits
    sock = _tls(server)
    try:
        sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n"
                     f"Content-Length: {100 * 1024 * 1024}\r\n\r\n".encode() + b"\x30" * 16384)
        status, body = _read_response(sock)
        if path == "/ocsp":
            assert status == 200 and parse(body).response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST
        else:
            assert status in (400, 404), status
        ended, sent = _closed_within(sock, 8)
        assert ended, f"the server read {sent} more bytes of a refused body and kept the connection for 8 s"
    finally:
        sock.close()


def test_good_requests_stay_fast_and_right_under_a_garbage_flood(served: tuple[Server, dict[str, object]]) -> None:
    """For about six seconds, twelve clients send garbage while two ask for the good and the
    revoked certificate's status (POST and GET) and the revoked one's CRL: every good request is
    answered right with p99 under 1 s, and garbage gets only malformedRequest (OCSP), 404
    (/crl/), 408 (a body a byte at a time, past the body deadline), never a 500."""
    server, known = served
    good, revoked, crl = known["good"], known["revoked"], known["crl"]
    assert isinstance(good, bytes) and isinstance(revoked, bytes) and isinstance(crl, str)
    stop = threading.Event()
    garbage: Counter[str] = Counter()
    problems: list[str] = []
    latencies: list[float] = []
    lock = threading.Lock()

    def note(kind: str, outcome: str) -> None:
        with lock:
            garbage[f"{kind}:{outcome}"] += 1

    def ocsp_status(answer: httpx.Response) -> str:
        return parse(answer.content).response_status.name if answer.status_code == 200 else str(answer.status_code)

    def flooder(seed: int) -> None:
        rng = random.Random(seed)
        with server.client() as client:
            while not stop.is_set():
                kind = rng.choice(["random-post", "oversized-post", "bad-base64-get", "random-base64-get",
                                   "crl-path"])
                try:
                    if kind == "random-post":
                        answer = client.post("/ocsp", content=rng.randbytes(rng.randrange(1, 10 * 1024)))
                        note(kind, ocsp_status(answer))
                    elif kind == "oversized-post":  # a connection of its own: the server ends it
                        with server.client() as once:
                            answer = once.post("/ocsp", content=rng.randbytes(rng.randrange(10 * 1024 + 1, 300_000)))
                        note(kind, ocsp_status(answer))
                    elif kind == "bad-base64-get":
                        junk = "".join(rng.choice("!*@$%^&()[]{}<>~`|;:'\",.") for _ in range(rng.randrange(1, 300)))
                        note(kind, ocsp_status(client.get("/ocsp/" + quote(junk, safe=""))))
                    elif kind == "random-base64-get":
                        text = base64.urlsafe_b64encode(rng.randbytes(rng.randrange(1, 20_000))).decode()
                        note(kind, ocsp_status(client.get("/ocsp/" + text)))
                    else:
                        parts = ["".join(rng.choice("0123456789abcdefxyz%-_") for _ in range(rng.randrange(0, 40)))
                                 for _ in range(rng.randrange(1, 4))]
                        note(kind, str(client.get("/crl/" + "/".join(parts) + rng.choice([".crl", "", ".der"]))
                                       .status_code))
                except httpx.HTTPError as exc:
                    note(kind, type(exc).__name__)

    def slow_body(_seed: int) -> None:
        while not stop.is_set():
            try:
                sock = _tls(server)
            except OSError as exc:
                note("slow-body", type(exc).__name__)
                continue
            try:
                sock.sendall(b"POST /ocsp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5000\r\n\r\n")
                sock.settimeout(0.3)
                outcome = "no answer"
                deadline = time.monotonic() + 3 * BODY_TIMEOUT
                while time.monotonic() < deadline:
                    try:
                        sock.send(b"\x30")
                        data = sock.recv(4096)
                        outcome = data.split(b"\r\n", 1)[0].decode(errors="replace") if data else "closed"
                        break
                    except (TimeoutError, ssl.SSLWantReadError):
                        continue
                    except OSError as exc:
                        outcome = type(exc).__name__
                        break
                note("slow-body", outcome)
            finally:
                sock.close()

    def asker(seed: int) -> None:
        rng = random.Random(seed)
        with server.client() as client:
            while not stop.is_set():
                which = rng.choice(["good-post", "revoked-post", "good-get", "revoked-get", "crl"])
                started = time.monotonic()
                try:
                    if which == "crl":
                        answer = client.get(crl)
                        ok = answer.status_code == 200 and x509.load_der_x509_crl(
                            answer.content).get_revoked_certificate_by_serial_number(
                            known["revoked_serial"]) is not None  # type: ignore[arg-type]
                    else:
                        der = good if which.startswith("good") else revoked
                        answer = (client.post("/ocsp", content=der) if which.endswith("post") else
                                  client.get("/ocsp/" + base64.urlsafe_b64encode(der).decode()))
                        status = parse(answer.content).certificate_status
                        ok = answer.status_code == 200 and status == (
                            ocsp.OCSPCertStatus.GOOD if which.startswith("good") else ocsp.OCSPCertStatus.REVOKED)
                except (httpx.HTTPError, ValueError) as exc:
                    ok, answer = False, exc  # type: ignore[assignment]
                took = time.monotonic() - started
                with lock:
                    latencies.append(took)
                    if not ok:
                        problems.append(f"{which}: {answer!r}")
                time.sleep(0.01)

    workers = [threading.Thread(target=flooder, args=(i,)) for i in range(8)]
    workers += [threading.Thread(target=slow_body, args=(i,)) for i in range(4)]
    workers += [threading.Thread(target=asker, args=(100 + i,)) for i in range(2)]
    for t in workers:
        t.start()
    time.sleep(6)
    stop.set()
    for t in workers:
        t.join(30)
    assert not any(t.is_alive() for t in workers)
    assert problems == []
    latencies.sort()
    assert len(latencies) >= 50, len(latencies)
    p99 = latencies[int(len(latencies) * 0.99)]
    assert p99 < 1.0, f"p99 {p99:.3f} s over {len(latencies)} good requests"
    allowed = {"random-post": {"MALFORMED_REQUEST"}, "oversized-post": {"MALFORMED_REQUEST"},
               "bad-base64-get": {"MALFORMED_REQUEST"}, "random-base64-get": {"MALFORMED_REQUEST"},
               "crl-path": {"404"}, "slow-body": {"HTTP/1.1 408 Request Timeout"}}
    seen: dict[str, set[str]] = {}
    for key in garbage:
        kind, outcome = key.split(":", 1)
        seen.setdefault(kind, set()).add(outcome)
    assert set(seen) == set(allowed), garbage
    for kind, outcomes in seen.items():
        assert outcomes <= allowed[kind], (kind, garbage)
    log = server.log.read_text(errors="replace")
    assert "Traceback" not in log and " 500 " not in log, log[-3000:]
