"""The small HTTP/1.1 client of http-01 validation: one GET to one checked address.

Hand-written over asyncio streams and httptools, because the validation authority must
connect to the very address its guard allowed (never a fresh lookup), cap what it reads
(head and body), and fail in words of its own, never the target's. ``Checker.http01``
(:mod:`.validation`) follows the redirects and judges the answer.
"""

from __future__ import annotations

import asyncio
import ssl

import httptools

MAX_BODY_BYTES = 8 * 1024
MAX_HEADER_BYTES = 16 * 1024  # of a response's head: beyond it, a target is refused, not read on


class ResponseCutShort(OSError):
    """The connection ended before the response did (a failure to reach the target)."""


class ResponseTooLarge(Exception):
    """The response's head or body is over its cap: the target is refused, not read on."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def unverified_context() -> ssl.SSLContext:
    """A TLS client context that checks no certificate (http-01 over https, tls-alpn-01)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # trustyard: allow-insecure validation reads the challenge response; RFC 8555 8.3 does not verify the certificate
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # trustyard: allow-insecure (as above)
    return context


class _Response:
    """httptools callbacks: the status, the first Location, the body (capped), and what it
    takes to tell a complete response from one cut short."""

    def __init__(self) -> None:
        self.location = ""
        self.body = bytearray()
        self.framed = False  # Content-Length or chunked: the body has an end before EOF
        self.head_done = False
        self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if not self.location and name == b"location":
            self.location = value.decode("latin-1")
        elif name in (b"content-length", b"transfer-encoding"):
            self.framed = True

    def on_headers_complete(self) -> None:
        self.head_done = True

    def on_body(self, chunk: bytes) -> None:
        self.body += chunk
        if len(self.body) > MAX_BODY_BYTES:
            raise ResponseTooLarge(f"response body larger than {MAX_BODY_BYTES} bytes")

    def on_message_complete(self) -> None:
        self.complete = True


async def http_get(address: str, port: int, host: str, path: str, tls: bool) -> tuple[int, str, bytes]:
    """GET ``path`` from ``address`` (the address the guard checked, never a new lookup), with
    ``host`` as the Host header and, over TLS, as the SNI (the certificate is not checked,
    as in http-01): the status, the first Location and the body.

    Raises ResponseTooLarge past a cap; OSError (ResponseCutShort included), ssl.SSLError or
    httptools.HttpParserError when the target cannot be read."""
    reader, writer = await asyncio.open_connection(address, port, ssl=unverified_context() if tls else None,
                                                   server_hostname=host if tls else None)
    try:
        host_header = f"[{host}]" if ":" in host else host
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: trustyard-acme-va\r\n"
                     f"Accept: */*\r\nConnection: close\r\n\r\n".encode("latin-1"))
        response = _Response()
        parser = httptools.HttpResponseParser(response)
        head = 0
        while not response.complete:
            data = await reader.read(65536)
            if not data:  # the server closed: only a body without a length may end here
                if not response.head_done or response.framed:
                    raise ResponseCutShort("the response ended early")
                break
            if not response.head_done:
                head += len(data)  # httptools only reports a header once it has ended: count here
                if head > MAX_HEADER_BYTES + MAX_BODY_BYTES:
                    raise ResponseTooLarge(f"response headers larger than {MAX_HEADER_BYTES} bytes")
            try:
                parser.feed_data(data)
            except httptools.HttpParserUpgrade:  # 101 and the like: its status says no
                break
            except httptools.HttpParserCallbackError as exc:  # raised in a callback: the body cap
                if isinstance(exc.__context__, ResponseTooLarge):
                    raise exc.__context__ from None
                raise
        status = parser.get_status_code()
        if not status:
            raise ResponseCutShort("no status line")
        return status, response.location, bytes(response.body)
    finally:
        writer.transport.abort()  # no TLS close_notify exchange: nothing more is wanted from this target
