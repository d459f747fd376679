"""Slow and greedy clients against a real ``trustyard serve``.

A request whose line and headers do not arrive within ``[server] header_timeout``, or whose
body does not arrive within ``body_timeout``, is answered 408 and its connection closed; a
worker holds at most ``max_connections`` connections and answers one more with 503. Every
client here speaks real TLS to the server on loopback.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import tomli_w

from trustyard.ca.config import load_config
from trustyard.errors import ConfigError
from trustyard.testing import free_port

from .support import PASSWORD, Server, start_server, str_ctx

HEADER_DEADLINE = 2.0
SLACK = 2.0  # scheduling on a shared two-core machine


def configure(home: Path, **server: Any) -> None:
    path = home / "trustyard.toml"
    doc = tomllib.loads(path.read_text())
    doc["server"].update(server)
    path.write_text(tomli_w.dumps(doc))


@pytest.fixture
def slow_server(sqlite_home: Path) -> Iterator[Server]:
    configure(sqlite_home, header_timeout=f"{HEADER_DEADLINE:g}s", body_timeout=f"{HEADER_DEADLINE:g}s")
    server = start_server(sqlite_home, workers=1)
    yield server
    server.stop()


def tls_socket(server: Server) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    return str_ctx(server.root).wrap_socket(raw, server_hostname="localhost")


def read_until_closed(sock: ssl.SSLSocket) -> bytes:
    """What the server sends until it closes the connection (EOF, close_notify or reset)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionError, ssl.SSLError):
        pass
    return data


def problem_of(reply: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(body)


# -- the header deadline, 300 at once -------------------------------------------------------------

async def _half_requests(server: Server, count: int) -> list[tuple[float, bytes]]:
    """``count`` TLS connections that each send half a request and wait; (seconds open, reply)."""
    ctx = str_ctx(server.root)
    handshakes = asyncio.Semaphore(50)

    async def one(i: int) -> tuple[float, bytes]:
        async with handshakes:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=ctx,
                                                           server_hostname="localhost")
        opened = time.monotonic()
        half = [b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ", b"GET /heal", b"POST /v1/sign HT"][i % 3]
        writer.write(half)
        await writer.drain()
        try:
            reply = await asyncio.wait_for(reader.read(), timeout=HEADER_DEADLINE + 30)
        except (ConnectionError, ssl.SSLError):
            reply = b""
        except TimeoutError:
            reply = b"(still open)"
        closed = time.monotonic() - opened
        writer.close()
        return closed, reply

    return await asyncio.gather(*(one(i) for i in range(count)))


def test_300_half_sent_requests_are_closed_at_the_deadline_while_others_are_served(slow_server: Server) -> None:
    answers: list[tuple[int, float]] = []
    stop = threading.Event()

    def normal_client() -> None:
        with slow_server.client() as client:
            while not stop.is_set():
                started = time.monotonic()
                status = client.get("/healthz").status_code
                answers.append((status, time.monotonic() - started))
                time.sleep(0.05)

    thread = threading.Thread(target=normal_client)
    thread.start()
    try:
        results = asyncio.run(_half_requests(slow_server, 300))
    finally:
        stop.set()
        thread.join(30)
    assert len(results) == 300
    late = [round(seconds, 2) for seconds, _reply in results if seconds > HEADER_DEADLINE + SLACK]
    assert not late, f"{len(late)} half-sent requests outlived the {HEADER_DEADLINE} s header deadline: {late[:10]}"
    early = [round(seconds, 2) for seconds, _reply in results if seconds < HEADER_DEADLINE - 0.2]
    assert not early, f"closed before the deadline: {early[:10]}"
    timeouts = [reply for _seconds, reply in results if reply.startswith(b"HTTP/1.1 408 ")]
    assert len(timeouts) == 300
    _status, headers, doc = problem_of(timeouts[0])
    assert headers["content-type"] == "application/problem+json" and headers["connection"] == "close"
    assert doc["type"] == "urn:trustyard:error:requestTimeout" and "headers" in doc["detail"]
    # the normal client kept getting answers all along, and promptly
    assert len(answers) >= 20 and {status for status, _ in answers} == {200}, answers[:10]
    assert max(seconds for _, seconds in answers) < 2.0


@pytest.mark.slow
def test_the_default_header_deadline_is_10_seconds(sqlite_home: Path) -> None:
    """No configuration: uvicorn alone would keep this connection open for ever."""
    server = start_server(sqlite_home, workers=1)
    try:
        sock = tls_socket(server)
        sock.settimeout(10 + 3 * SLACK)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        started = time.monotonic()
        try:
            reply = read_until_closed(sock)
        except TimeoutError:
            reply = b"(still open)"
        assert reply.startswith(b"HTTP/1.1 408 "), reply
        assert 9.8 <= time.monotonic() - started <= 10 + SLACK
        sock.close()
    finally:
        server.stop()


# -- a trickle, a keep-alive connection, the body deadline ----------------------------------------

def test_a_trickling_client_is_cut_at_the_deadline_not_at_its_last_byte(slow_server: Server) -> None:
    sock = tls_socket(slow_server)
    opened = time.monotonic()
    sock.settimeout(0.4)
    request = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"a" * 100
    sent, reply = 0, b""
    try:
        for byte in request:  # one byte every 0.3 s: never idle long, never finished
            sock.sendall(bytes([byte]))
            sent += 1
            try:
                reply = sock.recv(65536)
            except TimeoutError:
                continue
            break
    except (ConnectionError, ssl.SSLError):
        pass
    closed = time.monotonic() - opened
    assert HEADER_DEADLINE - 0.2 <= closed <= HEADER_DEADLINE + SLACK, closed
    assert reply.startswith(b"HTTP/1.1 408 "), reply
    sock.close()


def test_a_kept_alive_connection_gets_a_deadline_for_its_next_request(slow_server: Server) -> None:
    sock = tls_socket(slow_server)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
    first = sock.recv(65536)
    assert first.startswith(b"HTTP/1.1 200 "), first
    time.sleep(1.0)  # within uvicorn's keep-alive idle time (5 s)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHo")
    started = time.monotonic()
    reply = read_until_closed(sock)
    assert HEADER_DEADLINE - 0.2 <= time.monotonic() - started <= HEADER_DEADLINE + SLACK
    assert reply.startswith(b"HTTP/1.1 408 "), reply
    sock.close()


@pytest.mark.parametrize("path, content_type", [
    ("/v1/sign", "application/json"),  # through Starlette
    ("/acme/acme/new-account", "application/jose+json"),  # a bare ASGI endpoint, routed by Starlette
])
def test_a_body_that_stops_short_is_closed_at_the_body_deadline(slow_server: Server, path: str,
                                                                content_type: str) -> None:
    sock = tls_socket(slow_server)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\n"
                 "Content-Length: 1000\r\n\r\n".encode() + b'{"csr": "1')
    started = time.monotonic()
    reply = read_until_closed(sock)
    assert HEADER_DEADLINE - 0.2 <= time.monotonic() - started <= HEADER_DEADLINE + SLACK
    status, headers, doc = problem_of(reply)
    assert status == 408 and headers["connection"] == "close"
    assert doc["type"] == "urn:trustyard:error:requestTimeout" and "body" in doc["detail"]
    sock.close()
    with slow_server.client() as client:  # and the worker is fine
        assert client.get("/healthz").status_code == 200
    assert "Traceback" not in slow_server.log.read_text()  # a cut body is not an internal error


def test_a_prompt_request_is_not_disturbed_by_the_deadlines(slow_server: Server) -> None:
    with slow_server.client() as client:
        for _ in range(3):
            assert client.get("/healthz").status_code == 200
            time.sleep(HEADER_DEADLINE * 0.6)  # idle between requests on one connection: keep-alive's job


# -- the connection cap ---------------------------------------------------------------------------

def test_past_the_connection_cap_a_client_gets_503_and_a_closed_connection(sqlite_home: Path) -> None:
    configure(sqlite_home, max_connections=20)
    server = start_server(sqlite_home, workers=1)
    idle: list[ssl.SSLSocket] = []
    try:
        for _ in range(20):
            idle.append(tls_socket(server))  # handshaken, silent: each holds a slot
        time.sleep(0.3)
        sock = tls_socket(server)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        started = time.monotonic()
        reply = read_until_closed(sock)
        assert time.monotonic() - started < 2.5  # answered and closed at once
        status, headers, doc = problem_of(reply)
        assert status == 503 and headers["retry-after"] == "1" and headers["connection"] == "close"
        assert doc["type"] == "urn:trustyard:error:tooManyConnections" and "20" in doc["detail"]
        sock.close()
        for s in idle:
            s.close()
        idle.clear()
        deadline = time.monotonic() + 5
        while True:  # the slots come back as soon as the connections are gone
            with server.client() as client:
                if client.get("/healthz").status_code == 200:
                    break
            assert time.monotonic() < deadline, "the cap did not release its slots"
            time.sleep(0.1)
        assert "refusing connections: 20 open" in server.log.read_text()
    finally:
        for s in idle:
            s.close()
        server.stop()


# -- configuration ---------------------------------------------------------------------------------

def test_defaults_and_refusal_of_bad_limits(sqlite_home: Path) -> None:
    assert load_config(sqlite_home).server_limits() == (10.0, 30.0, 1000)
    for key, value in [("header_timeout", "0s"), ("body_timeout", "soon"), ("header_timeout", "2h"),
                       ("max_connections", 0), ("max_connections", "many")]:
        configure(sqlite_home, **{"header_timeout": "10s", "body_timeout": "30s", "max_connections": 1000,
                                  key: value})
        with pytest.raises(ConfigError) as info:
            load_config(sqlite_home)
        assert f"[server] {key}" in str(info.value)


def test_serve_flags_override_and_are_checked(sqlite_home: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "trustyard", "serve", "--home", str(sqlite_home),
                          "--header-timeout", "ten"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "TRUSTYARD_PASSWORD": PASSWORD.decode()})
    assert run.returncode != 0 and "[server] header_timeout" in run.stderr, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
    help_text = subprocess.run([sys.executable, "-m", "trustyard", "serve", "--help"], capture_output=True,
                               text=True, timeout=60).stdout
    for flag in ("--header-timeout", "--body-timeout", "--max-connections", "408", "503"):
        assert flag in help_text


def test_flags_reach_the_workers(sqlite_home: Path) -> None:
    """Two worker processes (uvicorn spawns them): the limits from the flags hold in each."""
    port = free_port()
    log = sqlite_home / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "trustyard", "serve", "--home", str(sqlite_home), "--listen", f"127.0.0.1:{port}",
             "--workers", "2", "--header-timeout", "1s", "--log-level", "warning"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "TRUSTYARD_PASSWORD": PASSWORD.decode()})
    server = Server(sqlite_home, port, process, log)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with server.client() as client:
                    if client.get("/healthz").status_code == 200:
                        break
            except httpx.HTTPError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        socks = [tls_socket(server) for _ in range(6)]  # spread over both workers by the kernel
        for s in socks:
            s.sendall(b"GET /heal")
        started = time.monotonic()
        replies = [read_until_closed(s) for s in socks]
        assert time.monotonic() - started < 1.0 + SLACK
        assert all(r.startswith(b"HTTP/1.1 408 ") for r in replies), replies
        for s in socks:
            s.close()
    finally:
        server.stop()


def test_sigterm_with_an_idle_kept_alive_client_exits_at_once(sqlite_home: Path) -> None:
    """A pooled client that keeps its connection open and never reads it (so never answers
    the TLS close_notify) does not hold ``serve``'s exit until the graceful-shutdown timeout:
    the server exits within a few seconds and logs no cancelled shutdown."""
    server = start_server(sqlite_home, workers=1)
    client = server.client()
    try:
        assert client.get("/healthz").status_code == 200  # the connection stays in the pool, idle
        started = time.monotonic()
        server.process.terminate()
        server.process.wait(30)
        took = time.monotonic() - started
    finally:
        client.close()
        server.stop()
    log = server.log.read_text()
    assert "timeout graceful shutdown exceeded" not in log, log
    assert took < 1.0 + 2 * SLACK, f"serve took {took:.1f} s to exit"
