"""A CA of N ``trustyard serve`` replicas on one PostgreSQL behind haproxy, on loopback, for the
crash tests: each replica has its own copy of the CA home (keys, trustyard.toml, the audit key)
and shares the database; haproxy passes TLS through and sends new connections to the replicas
its health checks find up. Also an http-01 responder the ACME clients publish to."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from trustyard.testing import free_port

from ..support import Server, start_server

PREFIX = "/.well-known/acme-challenge/"


class Responder:
    """http-01 answers: ``publish(token, key_authorization)``, served on ``port``."""

    def __init__(self) -> None:
        self.answers: dict[str, str] = {}
        answers = self.answers

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = answers.get(self.path[len(PREFIX):], "") if self.path.startswith(PREFIX) else ""
                self.send_response(200 if body else 404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def publish(self, token: str, key_authorization: str) -> None:
        self.answers[token] = key_authorization

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Replica:
    """One ``trustyard serve`` on its own copy of the home, restartable on the same port."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home, self.env, self.port = home, env, free_port()
        self.server: Server | None = None

    def start(self) -> float:
        """Start and wait until healthy; the seconds it took."""
        started = time.monotonic()
        self.server = start_server(self.home, workers=1, env=self.env, port=self.port)
        return time.monotonic() - started

    def kill(self) -> None:
        """``kill -9`` of the replica's whole process group: no shutdown, no answer, no cleanup."""
        assert self.server is not None
        self.server.stop(sig=9)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


HAPROXY_CONFIG = """\
global
    maxconn 1024
defaults
    mode tcp
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    retries 3
    option redispatch
listen ca
    bind 127.0.0.1:{port}
    balance roundrobin
{servers}
"""


@contextmanager
def haproxy(ports: list[int], workdir: Path) -> Iterator[int]:
    """haproxy in the foreground, TCP (TLS passes through to the replicas), health-checking each
    replica every 200 ms; a connection refused is retried on another replica. Yields its port."""
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    port = free_port()
    servers = "\n".join(f"    server r{i} 127.0.0.1:{p} check inter 200ms fall 1 rise 1"
                        for i, p in enumerate(ports))
    config = workdir / "haproxy.cfg"
    config.write_text(HAPROXY_CONFIG.format(port=port, servers=servers))
    log = (workdir / "haproxy.log").open("wb")
    process = subprocess.Popen([binary, "-db", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"haproxy exited: {(workdir / 'haproxy.log').read_text()}")
            try:
                import socket
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(10)
        log.close()
