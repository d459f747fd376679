"""``/ocsp``: the OCSP responder over HTTP (RFC 6960 appendix A, RFC 5019), as a bare ASGI
endpoint, first in the app's routes (the hot path is a parse and a dict lookup).

POST ``/ocsp`` with the DER request as body (at most ``MAX_REQUEST_BYTES``), or GET
``/ocsp/{base64 of the DER}``. Every answer is HTTP 200 with an OCSP response, errors included
(malformedRequest, unauthorized for an issuer that is not ours, tryLater when the ledger or the
signing fails), never a 500; other methods get the router's 405 problem. A successful GET answer carries the RFC
5019 caching headers (max-age up to the time trustyard re-signs it, ETag, Last-Modified,
Expires) and If-None-Match gives 304.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from email.utils import format_datetime

from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from ..ca.ocsp import Answer, Miss, OcspResponder
from ..x509 import ocsp as proto
from .metrics import OCSP_RESPONSES

log = logging.getLogger("trustyard.ocsp")

PATH = "/ocsp"
MAX_REQUEST_BYTES = 10 * 1024
MEDIA_TYPE = b"application/ocsp-response"
_MAX_GET_CHARS = (MAX_REQUEST_BYTES * 4) // 3 + 4


_COUNTED = {status: OCSP_RESPONSES.labels(status) for status in ("good", "revoked", "unknown")}
_ERRORS = {proto.MALFORMED: OCSP_RESPONSES.labels("malformedRequest"),
           proto.UNAUTHORIZED: OCSP_RESPONSES.labels("unauthorized"),
           proto.TRY_LATER: OCSP_RESPONSES.labels("tryLater")}


class OcspEndpoint:
    def __init__(self, responder: OcspResponder) -> None:
        self.responder = responder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        try:
            if method == "POST":
                der = await _body(scope, receive)
            else:
                der = _from_path(scope["path"])
            result: bytes | Answer | Miss = proto.MALFORMED if der is None else self.responder.lookup(der)
            if isinstance(result, Miss):
                result = await run_in_threadpool(self.responder.resolve, result)
        except asyncio.CancelledError:
            raise
        except Exception:  # never a 500: the client may ask again
            log.exception("OCSP: request failed")
            result = proto.TRY_LATER
        if isinstance(result, bytes):
            counter = _ERRORS.get(result)
            if counter is not None:
                counter.inc()
            await _send(send, 200, result, [(b"content-type", MEDIA_TYPE), (b"cache-control", b"no-store")],
                        head=method == "HEAD")
            return
        _COUNTED[result.status].inc()
        headers = [(b"content-type", MEDIA_TYPE)]
        if method != "POST":  # RFC 5019 6: only GET answers are cacheable by HTTP caches
            headers += _cache_headers(result)
            if _matches(scope, result.etag):
                await _send(send, 304, b"", headers)
                return
        await _send(send, 200, result.der, headers, head=method == "HEAD")


def _cache_headers(answer: Answer) -> list[tuple[bytes, bytes]]:
    max_age = max(0, int(answer.stale_at - time.time()))
    return [(b"cache-control", f"max-age={max_age}, public, no-transform, must-revalidate".encode()),
            (b"etag", answer.etag.encode()),
            (b"last-modified", format_datetime(answer.this_update, usegmt=True).encode()),
            (b"expires", format_datetime(answer.next_update, usegmt=True).encode())]


def _matches(scope: Scope, etag: str) -> bool:
    for name, value in scope["headers"]:
        if name == b"if-none-match":
            tags = {t.strip().removeprefix("W/") for t in value.decode("latin-1").split(",")}
            return etag in tags or "*" in tags
    return False


async def _body(scope: Scope, receive: Receive) -> bytes | None:
    """The request body, or None when it is larger than ``MAX_REQUEST_BYTES`` (not read further)."""
    for name, value in scope["headers"]:
        if name == b"content-length" and (not value.isdigit() or int(value) > MAX_REQUEST_BYTES):
            return None
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_REQUEST_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _from_path(path: str) -> bytes | None:
    """The DER of a GET request: the path after ``/ocsp/``, base64 (URL-decoded by the server;
    the URL-safe alphabet and missing padding are accepted too)."""
    text = path[len(PATH) + 1:]
    if not text or len(text) > _MAX_GET_CHARS:
        return None
    text = text.replace("-", "+").replace("_", "/").rstrip("=")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


async def _send(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]], head: bool = False) -> None:
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})
