"""ASGI middleware enforcing an :class:`IdentityPolicy` on the client certificate.

The client certificate is read from the ASGI TLS extension,
``scope["extensions"]["tls"]["client_cert_chain"]`` (PEM strings, the client's own
certificate first). uvicorn does not fill it in itself; run it with the protocol classes
of :mod:`trustyard.tls.uvicorn`, which do. The handshake already verified the chain
against ``ca.crt`` (the server context), so the middleware only decides *who* may call.

- a path the policy refuses to judge (``.``/``..`` segments, encoded ``/``, ``.`` or ``\\``, a
  backslash, a NUL; :mod:`trustyard.tls.paths`), in ``scope["path"]`` or ``scope["raw_path"]``:
  400 problem, before anything else. The policy then judges exactly the ``scope["path"]``
  the application routes; nothing is normalized or rewritten.
- no client certificate: 401 ``application/problem+json``
- a certificate whose identity the policy does not allow here: 403 problem naming it
- allowed: the request goes on, with ``scope["trustyard.peer_identity"]`` set to the
  :class:`~trustyard.tls.identity.PeerIdentity`

WebSocket connections are checked the same way and refused with close code 1008.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from cryptography import x509

from ..errors import BadRequest, Code, Forbidden, TrustyardError, Unauthorized
from .identity import PeerIdentity, identity_of
from .paths import path_problem
from .policy import IdentityPolicy

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SCOPE_KEY = "trustyard.peer_identity"


def client_certificate(scope: Scope) -> x509.Certificate | None:
    """The client's certificate from the ASGI TLS extension, or None; ``Unauthorized``
    when what the server put there is not a readable certificate."""
    tls = (scope.get("extensions") or {}).get("tls") or {}
    chain = tls.get("client_cert_chain") or ()
    if not isinstance(chain, (list, tuple)):
        raise Unauthorized("the client certificate chain is unreadable")
    for pem in chain:
        try:
            cert = x509.load_pem_x509_certificate(pem.encode("ascii") if isinstance(pem, str) else pem)
            cert.extensions  # noqa: B018 - parsed now, so identity_of meets no malformed extension
        except Exception:  # cryptography raises several types on a malformed certificate
            raise Unauthorized("the client certificate cannot be parsed") from None
        return cert
    return None


class IdentityMiddleware:
    """``app = IdentityMiddleware(app, IdentityPolicy.load("policy.toml"))``."""

    def __init__(self, app: ASGIApp, policy: IdentityPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        method = scope.get("method", "GET") if scope["type"] == "http" else "GET"
        path = scope.get("path", "/")
        try:
            identity = self.decide(scope, method, path)
        except TrustyardError as error:
            await _refuse(scope, receive, send, error)
            return
        scope = dict(scope)
        scope[SCOPE_KEY] = identity
        await self.app(scope, receive, send)

    def decide(self, scope: Scope, method: str, path: str) -> PeerIdentity:
        problem = path_problem(path, scope.get("raw_path"))
        if problem:
            raise BadRequest(f"the request path has {problem}; send the path the resource lives at",
                             code=Code.AMBIGUOUS_PATH)
        cert = client_certificate(scope)
        if cert is None:
            raise Unauthorized("a client certificate is required: connect with mutual TLS")
        identity = identity_of(cert)
        if not self.policy.allows(identity, method, path):
            raise Forbidden(f"{identity.name or 'this certificate'} may not {method} {path}",
                            code=Code.IDENTITY_NOT_ALLOWED, identity=identity.name, names=list(identity.names))
        return identity


async def _refuse(scope: Scope, receive: Receive, send: Send, error: TrustyardError) -> None:
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.close", "code": 1008, "reason": error.detail[:120]})
        return
    body = json.dumps(error.problem()).encode()
    await send({
        "type": "http.response.start",
        "status": error.status,
        "headers": [(b"content-type", b"application/problem+json"),
                    (b"content-length", str(len(body)).encode())],
    })
    await send({"type": "http.response.body", "body": body})
