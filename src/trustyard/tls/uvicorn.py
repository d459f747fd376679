"""uvicorn protocol classes that put the client certificate into the ASGI scope.

uvicorn does not implement the ASGI TLS extension. These subclasses of its HTTP
protocols read the peer certificate from the transport's ``ssl_object`` when a
connection is made (asyncio and uvloop call ``connection_made`` after the handshake)
and add ``scope["extensions"]["tls"]`` to every request on that connection:
``client_cert_chain`` (PEM strings; Python's ``ssl`` exposes only the leaf, so one
entry), ``client_cert_name`` (RFC 4514 subject), ``client_cert_error`` (None: the
handshake already refused bad chains), ``tls_version`` and ``server_cert``.

Programmatically, with a hot-reloading context::

    import uvicorn
    from trustyard.tls import server_context
    from trustyard.tls.uvicorn import TLSProtocol, config

    ctx = server_context("/run/certs", client_auth="optional")
    uvicorn.Server(config(app, ctx, host="0.0.0.0", port=8443)).run()
    # the same by hand (uvicorn >= 0.41 has ssl_context_factory):
    # uvicorn.Config(app, http=TLSProtocol, ssl_context_factory=lambda cfg, default: ctx)

From the command line (certificates loaded once, no hot reload; use the above for that)::

    uvicorn --http trustyard.tls.uvicorn:TLSProtocol --ssl-certfile tls.crt \\
        --ssl-keyfile tls.key --ssl-ca-certs ca.crt --ssl-cert-reqs 1 app:app

WebSocket upgrades are served by uvicorn's separate WebSocket protocols, which these
classes do not extend: there the scope has no TLS extension.
"""

from __future__ import annotations

import asyncio
import inspect
import ssl
from typing import Any

import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from uvicorn.protocols.http.h11_impl import H11Protocol

_TLS_VERSIONS = {"TLSv1": 0x0301, "TLSv1.1": 0x0302, "TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


def tls_extension(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> dict[str, Any] | None:
    """The ASGI TLS extension dictionary for a connection, or None when it is not TLS."""
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    chain: list[str] = []
    name = None
    if der:
        cert = x509.load_der_x509_certificate(der)
        chain = [cert.public_bytes(Encoding.PEM).decode("ascii")]
        name = cert.subject.rfc4514_string()
    return {
        "server_cert": None,
        "client_cert_chain": chain,
        "client_cert_name": name,
        "client_cert_error": None,
        "tls_version": _TLS_VERSIONS.get(ssl_object.version() or ""),
        "cipher_suite": None,
    }


def _with_tls(app: Any, tls: dict[str, Any]) -> Any:
    async def app_with_tls(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            extensions = dict(scope.get("extensions") or {})
            extensions["tls"] = tls
            scope = {**scope, "extensions": extensions}
        await app(scope, receive, send)
    return app_with_tls


class _TLSScope:
    """Mixin: wrap this connection's app so each request's scope carries the TLS extension."""

    app: Any

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        tls = tls_extension(transport.get_extra_info("ssl_object"))
        if tls is not None:
            self.app = _with_tls(self.app, tls)


class H11TLSProtocol(_TLSScope, H11Protocol):  # type: ignore[misc]
    """uvicorn's h11 protocol plus the ASGI TLS extension."""


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is optional in uvicorn
    TLSProtocol: type[asyncio.Protocol] = H11TLSProtocol
else:
    class HttpToolsTLSProtocol(_TLSScope, HttpToolsProtocol):  # type: ignore[misc]
        """uvicorn's httptools protocol plus the ASGI TLS extension."""

    TLSProtocol = HttpToolsTLSProtocol


def config(app: Any, ssl_context: ssl.SSLContext, **kwargs: Any) -> uvicorn.Config:
    """A ``uvicorn.Config`` serving ``app`` over ``ssl_context`` with :data:`TLSProtocol`.

    Keyword arguments go to ``uvicorn.Config`` (host, port, log_level...).
    """
    kwargs.setdefault("http", TLSProtocol)
    if "ssl_context_factory" in inspect.signature(uvicorn.Config).parameters:
        return uvicorn.Config(app, ssl_context_factory=lambda _cfg, _default: ssl_context, **kwargs)
    cfg = uvicorn.Config(app, **kwargs)  # older uvicorn: load, then hand over the context
    cfg.load()
    cfg.ssl = ssl_context
    return cfg
