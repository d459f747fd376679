"""One TLS connection that records everything a diagnosis needs, and never verifies.

Python's ``ssl`` only hands over the peer's leaf, and only when verification passes;
pyOpenSSL's ``get_peer_cert_chain()`` gives the chain the server actually sent, so the
handshake here runs with verification off and the checks happen afterwards.
"""

from __future__ import annotations

import ipaddress
import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

from cryptography import x509
from OpenSSL import SSL

_T = TypeVar("_T")


@dataclass
class ProbeResult:
    host: str
    port: int
    sni: str | None
    chain: list[x509.Certificate] = field(default_factory=list)
    network_error: str | None = None  # refused | timeout | dns | unreachable
    network_detail: str = ""
    tls_error: str | None = None  # OpenSSL's reason text, when the handshake or first read failed
    tls_stage: str | None = None  # handshake | after_handshake
    cert_requested: bool = False  # the server sent a CertificateRequest
    client_cert_sent: bool = False
    protocol: str | None = None
    cipher: str | None = None
    server_date: datetime | None = None
    response_head: bytes = b""

    @property
    def handshake_ok(self) -> bool:
        return self.network_error is None and self.tls_stage != "handshake"


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _ssl_error_text(exc: Exception) -> str:
    if isinstance(exc, SSL.SysCallError):
        code, text = (*exc.args, None, None)[:2]
        return f"syscall error: {text or code}"
    if isinstance(exc, SSL.ZeroReturnError):
        return "connection closed by peer"
    parts = exc.args[0] if exc.args else []
    if isinstance(parts, list) and parts:
        return "; ".join(str(p[-1]) for p in parts)
    return str(exc) or type(exc).__name__


def _wait(sock: socket.socket, write: bool, deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("timed out")
    r, w, _ = select.select([] if write else [sock], [sock] if write else [], [], remaining)
    if not r and not w:
        raise TimeoutError("timed out")


def probe(
    host: str, port: int, *, sni: str | None = None, timeout: float = 5.0,
    cert_file: str | None = None, key_file: str | None = None, http_request: bool = False,
    read_wait: float = 0.5, permissive: bool = False,
) -> ProbeResult:
    """Connect, handshake without verification, keep the served chain.

    With ``http_request`` a ``HEAD /`` follows the handshake: TLS 1.3 servers reject a
    client certificate only after the handshake, and an HTTP ``Date`` header tells the
    server's clock. ``permissive`` offers every version from TLS 1.0 and every cipher at
    security level 0: if that handshake works where a normal one failed, the two sides
    share no version or cipher suite.
    """
    server_name = sni if sni is not None else (None if is_ip(host) else host)
    result = ProbeResult(host=host, port=port, sni=server_name)
    deadline = time.monotonic() + timeout
    try:
        sock = socket.create_connection((host.strip("[]"), port), timeout=timeout)
    except socket.gaierror as exc:
        result.network_error, result.network_detail = "dns", str(exc)
        return result
    except ConnectionRefusedError as exc:
        result.network_error, result.network_detail = "refused", str(exc)
        return result
    except TimeoutError as exc:
        result.network_error, result.network_detail = "timeout", str(exc) or "connect timed out"
        return result
    except OSError as exc:
        result.network_error, result.network_detail = "unreachable", str(exc)
        return result
    try:
        _handshake(sock, result, server_name, deadline, cert_file, key_file, http_request, read_wait, permissive)
    finally:
        sock.close()
    return result


def _handshake(sock: socket.socket, result: ProbeResult, server_name: str | None, deadline: float,
               cert_file: str | None, key_file: str | None, http_request: bool, read_wait: float,
               permissive: bool = False) -> None:
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.set_verify(SSL.VERIFY_NONE, lambda *args: True)
    if permissive:
        ctx.set_min_proto_version(SSL.TLS1_VERSION)
        ctx.set_cipher_list(b"ALL:@SECLEVEL=0")
    if cert_file:
        ctx.use_certificate_chain_file(cert_file)
        ctx.use_privatekey_file(key_file or cert_file)

    def on_info(conn: SSL.Connection, where: int, ret: int) -> None:
        state = conn.get_state_string().lower()
        if b"certificate request" in state:
            result.cert_requested = True
        if b"write client certificate" in state and cert_file:
            result.client_cert_sent = True

    ctx.set_info_callback(on_info)
    conn = SSL.Connection(ctx, sock)
    conn.set_connect_state()
    if server_name:
        conn.set_tlsext_host_name(server_name.encode("idna"))
    sock.setblocking(False)
    try:
        _drive(conn.do_handshake, sock, deadline)
    except TimeoutError:
        result.tls_stage, result.tls_error = "handshake", "timed out during the TLS handshake"
        _keep_chain(conn, result)
        return
    except SSL.Error as exc:
        result.tls_stage, result.tls_error = "handshake", _ssl_error_text(exc)
        _keep_chain(conn, result)
        return
    _keep_chain(conn, result)
    result.protocol = conn.get_protocol_version_name()
    result.cipher = conn.get_cipher_name()
    if result.cert_requested and not _early_read(conn, sock, result, min(deadline, time.monotonic() + read_wait)):
        return  # a TLS 1.3 server refuses a client certificate only after the handshake
    if not http_request:
        return
    data = b""
    try:
        host = server_name or result.host
        request = f"HEAD / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
        _drive(lambda: conn.sendall(request), sock, deadline)
        read_deadline = min(deadline, time.monotonic() + read_wait)
        while b"\r\n\r\n" not in data and len(data) < 65536:
            data += _drive(lambda: conn.recv(4096), sock, read_deadline)
    except (TimeoutError, SSL.ZeroReturnError, SSL.SysCallError):
        pass
    except SSL.Error as exc:
        result.tls_stage, result.tls_error = "after_handshake", _ssl_error_text(exc)
        return
    result.response_head = data[:4096]
    result.server_date = _http_date(data)


def _early_read(conn: SSL.Connection, sock: socket.socket, result: ProbeResult, deadline: float) -> bool:
    """Wait briefly for an alert before writing: a server that rejects our certificate
    closes at once, and writing first would turn its alert into a bare reset."""
    try:
        _drive(lambda: conn.recv(1), sock, deadline)
    except TimeoutError:
        return True
    except SSL.ZeroReturnError:
        result.tls_stage, result.tls_error = "after_handshake", "server closed the connection after the handshake"
        return False
    except SSL.Error as exc:
        result.tls_stage, result.tls_error = "after_handshake", _ssl_error_text(exc)
        return False
    return True


def sniff_plaintext(host: str, port: int, timeout: float = 2.0) -> bytes:
    """What the port answers to a plain-text HTTP request: non-TLS bytes mean not TLS."""
    try:
        with socket.create_connection((host.strip("[]"), port), timeout=timeout) as sock:
            sock.sendall(b"HEAD / HTTP/1.0\r\n\r\n")
            return sock.recv(256)
    except OSError:
        return b""


def looks_like_tls(data: bytes) -> bool:
    """A TLS record starts with content type 20-23 and major version 3."""
    return len(data) >= 2 and data[0] in (20, 21, 22, 23) and data[1] == 3


def _keep_chain(conn: SSL.Connection, result: ProbeResult) -> None:
    chain = conn.get_peer_cert_chain(as_cryptography=True)
    if chain:
        result.chain = list(chain)


def _drive(op: Callable[[], _T], sock: socket.socket, deadline: float) -> _T:
    while True:
        try:
            return op()
        except SSL.WantReadError:
            _wait(sock, False, deadline)
        except SSL.WantWriteError:
            _wait(sock, True, deadline)


def _http_date(head: bytes) -> datetime | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"date":
            try:
                return parsedate_to_datetime(value.strip().decode("latin-1"))
            except (TypeError, ValueError):
                return None
    return None
