"""The load generator's HTTP/1.1: one keep-alive connection per ACME client, parsed by httptools.

httpx cost the load generator about 0.7 ms of CPU per request on the bench machine: more than
either server spent answering it, so the load generator, not the server, set the pace. This
is the least a client can do per request (format a request line, let httptools parse the
answer), so that what the benchmark measures is the server.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httptools

TIMEOUT = 60.0  # seconds for one exchange: a server that stops answering fails the order, not the run


@dataclass(slots=True)
class Response:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class _Protocol(asyncio.Protocol):
    """Feeds what arrives to httptools and hands each complete response to the waiting request."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Response] | None = None
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._fail(exc or ConnectionError("the server closed the connection"))

    def _fail(self, exc: BaseException) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.headers, self.body = {}, []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, data: bytes) -> None:
        self.body.append(data)

    def on_message_complete(self) -> None:
        response = Response(self.parser.get_status_code(), self.headers, b"".join(self.body))
        if not self.parser.should_keep_alive() and self.transport is not None:
            self.transport.close()
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(response)


class Connection:
    """Requests to one origin over one connection, one at a time, reconnecting when the server
    closes it. ``verify`` is a CA file for https origins."""

    def __init__(self, origin: str, verify: str | None = None) -> None:
        parts = urlsplit(origin)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or (443 if parts.scheme == "https" else 80)
        self.authority = parts.netloc
        self.context = ssl.create_default_context(cafile=verify) if parts.scheme == "https" else None
        self.protocol: _Protocol | None = None

    async def request(self, method: str, url: str, body: bytes = b"",
                      content_type: str | None = None) -> Response:
        """``url`` is a path or an absolute URL on this connection's origin."""
        loop = asyncio.get_running_loop()
        if self.protocol is None or self.protocol.transport is None:
            _, self.protocol = await loop.create_connection(_Protocol, self.host, self.port, ssl=self.context)
        path = url if url.startswith("/") else "/" + url.split("/", 3)[3]
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.authority}\r\nContent-Length: {len(body)}\r\n"
        if content_type:
            head += f"Content-Type: {content_type}\r\n"
        protocol = self.protocol
        protocol.waiter = loop.create_future()
        assert protocol.transport is not None
        protocol.transport.write(head.encode() + b"\r\n" + body)
        try:
            return await asyncio.wait_for(protocol.waiter, TIMEOUT)
        finally:
            protocol.waiter = None

    def close(self) -> None:
        if self.protocol is not None and self.protocol.transport is not None:
            self.protocol.transport.close()
