"""bench/acme/dispatch: the CPU the app spends getting a request to its endpoint.

    PYTHONPATH=src python3 bench/acme/dispatch.py [--requests 20000] [--repeats 7]

Calls the app built by ``create_app`` in-process (no sockets, no TLS) with the eight POSTs of
an ACME order (newOrder, authorization, challenge, order, finalize, order, certificate,
authorization), every ``AcmePost`` endpoint replaced by one that answers an empty 200, and
then with ``GET /v1/roots`` (a REST route, answered for real). Prints the process CPU per
request, the minimum and the median over the repeats: what routing, middleware and
exception handling cost per request, free of the database, the signatures and the network
that make the full-flow benchmark (``run.py``) noisy on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from trustyard.api.acme_routes import AcmePost
from trustyard.api.app import create_app
from trustyard.ca.config import load_config
from trustyard.ca.home import InitOptions, init_home, load_authority

PASSWORD = b"bench-password-not-a-secret"
ORDER = ["/acme/acme/new-order", "/acme/acme/authz/a1", "/acme/acme/chall/c1", "/acme/acme/order/o1",
         "/acme/acme/order/o1/finalize", "/acme/acme/order/o1", "/acme/acme/cert/5f1c", "/acme/acme/authz/a1"]


async def _empty_answer(self: AcmePost, scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"{}", "more_body": False}


async def _send(message: dict[str, Any]) -> None:
    return None


async def _cpu_per_request(app: Any, method: str, paths: list[str], count: int, repeats: int) -> list[float]:
    base = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "https",
            "query_string": b"", "root_path": "", "server": ("127.0.0.1", 8443), "client": ("127.0.0.1", 5000),
            "headers": [(b"host", b"127.0.0.1:8443"), (b"content-type", b"application/jose+json"),
                        (b"content-length", b"2")]}
    scopes = [{**base, "path": p, "raw_path": p.encode()} for p in paths]
    times = []
    for run in range(repeats + 1):
        started = time.process_time()
        for i in range(count):
            await app(dict(scopes[i % len(scopes)]), _receive, _send)
        if run:  # the first is a warm-up
            times.append((time.process_time() - started) / count * 1e6)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    AcmePost.__call__ = _empty_answer  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory(prefix="bench-dispatch-") as tmp:
        home = Path(tmp) / "ca"
        init_home(home, PASSWORD, InitOptions())
        config = load_config(home)
        authority = load_authority(home, PASSWORD, config=config)
        app = create_app(authority, config)
        cases = [("ACME POSTs of an order", "POST", ORDER), ("GET /v1/roots", "GET", ["/v1/roots"])]
        for label, method, paths in cases:
            times = asyncio.run(_cpu_per_request(app, method, paths, args.requests, args.repeats))
            print(f"{label}: {min(times):.1f} us CPU per request (min), median {statistics.median(times):.1f} us")
        authority.store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
