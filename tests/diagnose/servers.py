"""TLS servers on loopback that serve what a scenario needs (certificates come from trustyard.testing).

Both test directories use it (tests/inventory imports it by path), so it lives in one place.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import warnings
from datetime import UTC, datetime, timedelta
from email.utils import formatdate
from pathlib import Path

NOW = datetime.now(UTC).replace(microsecond=0)
DAY = timedelta(days=1)


class Server:
    """A TLS (or plain) server on 127.0.0.1 in a thread, answering HTTP with a Date header."""

    def __init__(self, *, cert: Path | None = None, key: Path | None = None, client_ca: Path | None = None,
                 plain: bool = False, date: datetime | None = None,
                 versions: tuple[ssl.TLSVersion, ssl.TLSVersion] | None = None, ciphers: str | None = None) -> None:
        """``versions`` (minimum, maximum) and ``ciphers`` (an OpenSSL cipher string) make a
        server that only speaks what a given client will not."""
        self.date = date
        self.ctx: ssl.SSLContext | None = None
        if not plain:
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            if ciphers:
                self.ctx.set_ciphers(ciphers)
            if versions:
                with warnings.catch_warnings():  # a legacy-only server is the point (TLS 1.0/1.1)
                    warnings.simplefilter("ignore", DeprecationWarning)
                    self.ctx.minimum_version, self.ctx.maximum_version = versions
            self.ctx.load_cert_chain(str(cert), str(key))
            if client_ca:
                self.ctx.verify_mode = ssl.CERT_REQUIRED
                self.ctx.load_verify_locations(str(client_ca))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        try:
            if self.ctx is not None:
                tls = self.ctx.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
                try:
                    tls.do_handshake()
                    # TLS 1.3 checks the client certificate only now: read to let it fail
                    data = tls.recv(4096)
                except (ssl.SSLError, OSError):
                    self._linger(tls)
                    return
                conn = tls
            else:
                data = conn.recv(4096)
            # Like a strict HTTP server: answer garbage (a TLS ClientHello) at once with a 400.
            while self.ctx is not None and b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            ok = self.ctx is not None or data.startswith((b"GET ", b"HEAD "))
            date = formatdate((self.date or datetime.now(UTC)).timestamp(), usegmt=True)
            conn.sendall(f"HTTP/1.1 {'200 OK' if ok else '400 Bad Request'}\r\nDate: {date}\r\n"
                         "Content-Length: 3\r\nConnection: close\r\n\r\nok\n".encode())
        except (OSError, ssl.SSLError):
            pass
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    @staticmethod
    def _linger(tls: ssl.SSLSocket) -> None:
        """After a failed handshake, half-close and drain: closing with unread data sends a
        reset, which can destroy the alert before the client reads it."""
        try:
            tls.shutdown(socket.SHUT_WR)
            tls.settimeout(1)
            while tls.recv(4096):
                pass
        except (OSError, ValueError):
            pass
        finally:
            tls.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()
