"""The ASGI app the uvicorn command-line test serves (``tests.tls.app:app``)."""

from __future__ import annotations

from trustyard.tls import IdentityMiddleware, IdentityPolicy

from .test_asgi import POLICY, echo_app

app = IdentityMiddleware(echo_app, IdentityPolicy.from_toml(POLICY))
