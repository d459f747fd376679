"""The CA server's uvicorn HTTP protocol: uvicorn's, with the writes of one response merged,
deadlines for slow clients and a cap on open connections.

uvicorn writes a response's head when the app sends ``http.response.start`` and its body on
``http.response.body``: two writes to the transport. On TLS each write is its own record,
encryption call and ``send`` syscall. A Starlette response sends both in one step of the
event loop, so :class:`CoalescingTransport` collects the writes made in one loop iteration
and hands them to the real transport as one at the end of it (``loop.call_soon``). Bytes
keep their order, and a close or abort sends what is pending first.

uvicorn bounds only the idle time between requests (``timeout_keep_alive``): a client that
sends half a request line and stops holds its connection, and a worker's file descriptors,
for ever. :class:`ServerLimits` adds what it lacks, per connection and so on every route
(the ACME POSTs included):

- the request line and headers must be complete within ``header_timeout`` of the TLS
  handshake (or, on a kept-alive connection, of the request's first byte);
- the body must be complete within ``body_timeout`` of the headers;
- past either, the server answers ``408`` (a problem document, ``Connection: close``) unless
  the application has started its response, and closes the connection; the application
  sees ``http.disconnect``;
- a response sent before its request's body has arrived in full (a refusal: too large, not
  found, unauthorised) ends the connection: the rest of the body is not read and thrown away
  (uvicorn would read it all, up to the body deadline, to keep the connection alive);
- a worker holds at most ``max_connections`` open connections; one more is answered ``503``
  with a problem document, ``Retry-After: 1`` and ``Connection: close`` as soon as its TLS
  handshake is done, without waiting for (or reading) its request, and closed.

A closing connection whose peer does not finish the TLS shutdown is dropped after
``CLOSE_GRACE`` seconds, so a slow client cannot hold a descriptor past its deadline, nor an
idle kept-alive client hold ``serve``'s exit on SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..errors import Code

log = logging.getLogger("trustyard.api")

CLOSE_GRACE = 1.0
"""Seconds a closed connection may spend on its TLS shutdown before it is aborted."""


@dataclass(frozen=True)
class ServerLimits:
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_connections: int = 1000


def _problem_response(status: int, reason: bytes, detail: str, code: Code, extra: bytes = b"") -> bytes:
    title = {408: "Request timeout", 503: "Service unavailable"}[status]
    body = json.dumps({"type": f"urn:trustyard:error:{Code(code)}", "title": title, "status": status,
                       "detail": detail}).encode()
    return (b"HTTP/1.1 %d %s\r\ncontent-type: application/problem+json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n%s\r\n" % (status, reason, len(body), extra)) + body


class CoalescingTransport:
    """A transport proxy that merges the ``write`` calls made in one event loop iteration."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append(bytes(data))

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def _flush(self) -> None:
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(len(chunk) for chunk in self._pending)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:  # everything else is the real transport's
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol writing through a :class:`CoalescingTransport`, with the
    header and body deadlines and the connection cap of ``limits`` (see the module's text).
    ``serve`` passes ``limits`` with ``functools.partial``; uvicorn supplies the rest."""

    _last_refusal_logged = 0.0  # refusals are logged at most once a second per worker

    def __init__(self, *args: Any, limits: ServerLimits | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits or ServerLimits()
        self._deadline: asyncio.TimerHandle | None = None
        self._grace: asyncio.TimerHandle | None = None
        self._raw: asyncio.Transport | None = None
        self._refused = self._lost = False

    # -- the connection cap -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._raw = transport
        if len(self.connections) >= self.limits.max_connections:
            self._refuse(transport)
            return
        super().connection_made(CoalescingTransport(transport))  # type: ignore[arg-type]
        self._arm(self.limits.header_timeout, "header")

    def _refuse(self, transport: asyncio.Transport) -> None:
        self._refused = True
        self.transport = transport
        now = time.monotonic()
        if now - CoalescingHttpToolsProtocol._last_refusal_logged >= 1.0:
            CoalescingHttpToolsProtocol._last_refusal_logged = now
            log.warning("refusing connections: %d open, the limit per worker is %d ([server] max_connections)",
                        len(self.connections), self.limits.max_connections)
        transport.write(_problem_response(
            503, b"Service Unavailable", f"the server holds its limit of {self.limits.max_connections} open "
            "connections; retry shortly", Code.TOO_MANY_CONNECTIONS, b"retry-after: 1\r\n"))
        self._close()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # the answer is sent; the request is not read
        super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._disarm()
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None
        if self._refused:
            return
        super().connection_lost(exc)

    # -- the deadlines -------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:  # a kept-alive connection's next request: counted from its first byte
            self._arm(self.limits.header_timeout, "header")

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()
        self._arm(self.limits.body_timeout, "body")  # a request without a body completes at once

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def _arm(self, seconds: float, phase: str) -> None:
        self._disarm()
        if not self._lost:
            self._deadline = self.loop.call_later(seconds, self._expired, phase)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self, phase: str) -> None:
        self._deadline = None
        if self._lost or self.transport.is_closing():
            return
        seconds = self.limits.header_timeout if phase == "header" else self.limits.body_timeout
        cycle = self.cycle  # during the header phase, the previous request's (if any)
        pending = cycle is not None and not cycle.response_complete
        if phase == "header":
            answer = not (pending and cycle.response_started)
        else:  # an application that answered without reading the whole body has had its say
            answer = cycle is None or not cycle.response_started
        if answer:
            self.transport.write(_problem_response(
                408, b"Request Timeout", f"the request's {'line and headers' if phase == 'header' else 'body'} "
                f"did not arrive within {seconds:g} s", Code.REQUEST_TIMEOUT))
        if pending:
            cycle.disconnected = True  # the application's receive() answers http.disconnect, its send() nothing
            cycle.message_event.set()
        self._close()

    # -- shutting down ------------------------------------------------------------------------

    def shutdown(self) -> None:
        """``serve`` stops (SIGTERM): an idle connection is closed at once, a busy one after its
        response, each through ``_close``. A kept-alive client that does not read (a pooled
        HTTP client between requests) never answers the TLS close_notify; without the grace it
        would hold the exit until the graceful-shutdown timeout."""
        if self._refused or self._lost:
            return
        if self.cycle is None or self.cycle.response_complete:
            self._close()
        else:
            self.cycle.keep_alive = False  # on_response_complete closes it

    def on_response_complete(self) -> None:
        cycle = self.cycle
        if cycle is not None and cycle.more_body and not self.transport.is_closing():
            self.transport.close()  # answered before the whole body came: read no more of it
        super().on_response_complete()
        if self.transport.is_closing():  # Connection: close, a refused body, or shutting down
            self._arm_grace()

    def _close(self) -> None:
        self.transport.close()
        self._arm_grace()

    def _arm_grace(self) -> None:
        if self._grace is None and not self._lost:
            self._grace = self.loop.call_later(CLOSE_GRACE, self._abort)

    def _abort(self) -> None:
        self._grace = None
        if not self._lost and self._raw is not None:
            self._raw.abort()
