"""Real servers on 127.0.0.1 for TLS tests: a threaded echo server and uvicorn in a thread."""

from __future__ import annotations

import contextlib
import queue
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from cryptography import x509

from trustyard.tls import peer_identity
from trustyard.tls.uvicorn import config as uvicorn_config

DEADLINE_S = 20.0


class EchoServer:
    """Each connection: handshake, then answer every line with ``<client identity> <line>``."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.errors: queue.Queue[BaseException] = queue.Queue()
        self.threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._serve, daemon=True)
        self._accept.start()

    def _serve(self) -> None:
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            t = threading.Thread(target=self._handle, args=(raw,), daemon=True)
            self.threads.append(t)
            t.start()

    def _handle(self, raw: socket.socket) -> None:
        raw.settimeout(DEADLINE_S)
        try:
            with self.context.wrap_socket(raw, server_side=True) as conn:
                who = peer_identity(conn)
                reader = conn.makefile("rb")
                try:
                    for line in reader:
                        conn.sendall(f"{who.name if who else '-'} ".encode() + line)
                finally:
                    reader.close()
        except (ssl.SSLError, OSError) as exc:
            self.errors.put(exc)
        finally:
            raw.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        self.listener.close()
        for t in self.threads:
            t.join(DEADLINE_S)
        self._accept.join(DEADLINE_S)

    def __enter__(self) -> EchoServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Conn:
    """A client connection that stays open while the test rotates files."""

    def __init__(self, context: ssl.SSLContext, port: int, hostname: str = "localhost") -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S)
        try:
            self.sock = context.wrap_socket(raw, server_hostname=hostname)
        except BaseException:
            raw.close()
            raise
        self.reader = self.sock.makefile("rb")

    @property
    def server_serial(self) -> int:
        return x509.load_der_x509_certificate(self.sock.getpeercert(binary_form=True)).serial_number

    def echo(self, text: str) -> str:
        self.sock.sendall(text.encode() + b"\n")
        return self.reader.readline().decode().strip()

    def close(self) -> None:
        self.reader.close()
        self.sock.close()

    def __enter__(self) -> Conn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def uvicorn_server(app: Any, context: ssl.SSLContext, **kwargs: Any) -> Iterator[str]:
    """uvicorn with trustyard's TLS protocol class and ``context``; yields the base URL.

    ``kwargs`` go to ``uvicorn.Config`` (e.g. ``http=`` another protocol class)."""
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    cfg = uvicorn_config(app, context, lifespan="off", ws="none", loop="asyncio",
                         log_level="warning", access_log=False, **kwargs)
    server = uvicorn.Server(cfg)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + DEADLINE_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        yield f"https://localhost:{port}"
    finally:
        server.should_exit = True
        thread.join(DEADLINE_S)
        sock.close()
