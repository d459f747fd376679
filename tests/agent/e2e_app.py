"""The service of the end-to-end test, run as its own process:

    python e2e_app.py CERT_DIR POLICY_TOML PORT

uvicorn with a hot-reloading ``trustyard.tls.server_context`` over the agent's directory,
the ASGI TLS extension from ``trustyard.tls.uvicorn`` and ``IdentityMiddleware``. Answers
with the caller's identity and the serial of the client certificate it presented.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import uvicorn

from trustyard.tls import IdentityMiddleware, IdentityPolicy, client_certificate, server_context
from trustyard.tls.uvicorn import config

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script: make ``tests`` importable
from tests.asgi_lifespan import handle_lifespan


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] == "lifespan":
        await handle_lifespan(receive, send)
        return
    cert = client_certificate(scope)
    body = json.dumps({"identity": scope["trustyard.peer_identity"].name,
                       "client_serial": format(cert.serial_number, "x") if cert else None}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    cert_dir, policy, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    ctx = server_context(cert_dir, client_auth="required")
    guarded = IdentityMiddleware(app, IdentityPolicy.load(policy))
    uvicorn.Server(config(guarded, ctx, host="127.0.0.1", port=port, log_level="warning")).run()


if __name__ == "__main__":
    main()
