"""The uvicorn service of the rotation end-to-end test, run as its own process:

    python service.py CERT_DIR PORT CA_URL CA_ROOT

A hot-reloading ``trustyard.tls.server_context`` over its agent's directory that requires a
client certificate, and ``trustyard.tls.report_to`` checking in every two seconds with the
bundle its context has loaded. Answers ``ok`` to every request.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

import uvicorn

from trustyard.tls import report_to, server_context
from trustyard.tls.uvicorn import config

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script: make ``tests`` importable
from tests.asgi_lifespan import handle_lifespan


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] == "lifespan":
        await handle_lifespan(receive, send)
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"3")]})
    await send({"type": "http.response.body", "body": b"ok\n"})


def main() -> None:
    cert_dir, port, ca_url, root = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    ctx = server_context(cert_dir, client_auth="required")
    report_to(ca_url, ctx, root=root, interval=timedelta(seconds=2), instance="uvicorn-1")
    uvicorn.Server(config(app, ctx, host="127.0.0.1", port=port, log_level="warning")).run()


if __name__ == "__main__":
    main()
