"""mTLS for Python services.

- :func:`server_context` / :func:`client_context`: ``ssl.SSLContext``s built from an
  agent's output directory (``tls.crt``, ``tls.key``, ``ca.crt``) or explicit paths,
  that use rotated files for new handshakes without a restart and without touching open
  connections.
- :func:`peer_identity`: the peer's identity (URI SAN first, else DNS names).
- :class:`IdentityPolicy` (TOML) and :class:`IdentityMiddleware` (ASGI) decide which
  identities may call this service; :mod:`trustyard.tls.uvicorn` gets the client
  certificate into the ASGI scope; :mod:`trustyard.tls.requests` adapts ``requests``.
- :func:`report_to` (optional): a background check-in with the CA reporting the trust
  bundle the contexts have loaded, so ``trustyard fleet`` lists the service.

A service behind uvicorn::

    from trustyard.tls import IdentityMiddleware, IdentityPolicy, server_context
    from trustyard.tls.uvicorn import config

    app = IdentityMiddleware(app, IdentityPolicy.load("/etc/orders/callers.toml"))
    ctx = server_context("/run/certs", client_auth="optional")
    uvicorn.Server(config(app, ctx, host="0.0.0.0", port=8443)).run()

A client::

    httpx.Client(verify=client_context("/run/certs"))
"""

from .asgi import IdentityMiddleware, client_certificate
from .context import ReloadingContext, TLSFiles, client_context, server_context
from .identity import PeerIdentity, identity_of, peer_identity
from .policy import IdentityPattern, IdentityPolicy, Rule
from .report import Reporter, report_to

__all__ = [
    "IdentityMiddleware", "IdentityPattern", "IdentityPolicy", "PeerIdentity", "ReloadingContext",
    "Reporter", "Rule", "TLSFiles", "client_certificate", "client_context", "identity_of", "peer_identity",
    "report_to", "server_context",
]
