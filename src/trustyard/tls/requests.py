"""Use a trustyard client context with ``requests``.

``requests`` takes file paths, not an ``SSLContext``; this transport adapter hands the
context to urllib3, so rotated client certificates and trust bundles are used for new
connections::

    session = requests.Session()
    session.mount("https://", ContextAdapter(client_context("/run/certs")))
    session.get("https://orders.internal:8443/")

Leave ``verify`` at its default: with a context, the bundle in the context decides.
"""

from __future__ import annotations

import ssl
from typing import Any

from requests.adapters import HTTPAdapter


class ContextAdapter(HTTPAdapter):
    def __init__(self, ssl_context: ssl.SSLContext, **kwargs: Any) -> None:
        self.ssl_context = ssl_context
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = self.ssl_context
        super().init_poolmanager(*args, **kwargs)

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        kwargs["ssl_context"] = self.ssl_context
        return super().proxy_manager_for(proxy, **kwargs)

    def build_connection_pool_key_attributes(self, request: Any, verify: Any, cert: Any = None) -> Any:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        # REQUESTS_CA_BUNDLE or verify="path" would otherwise add trust beside the context's.
        for key in ("ca_certs", "ca_cert_dir", "cert_file", "key_file"):
            pool_kwargs.pop(key, None)
        pool_kwargs["ssl_context"] = self.ssl_context
        pool_kwargs["cert_reqs"] = "CERT_REQUIRED"
        return host_params, pool_kwargs

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        # requests would load its own CA file into the pool (certifi); the context's
        # trust bundle must stay the only trust. A client certificate comes from the context.
        if cert:
            raise ValueError("the client certificate comes from the SSL context; do not pass cert=")
        if verify is False:
            raise ValueError("verify=False with a trustyard context: the context always verifies")
