"""bench/acme/inproc: the server's CPU per ACME order, in process, steady on a busy machine.

    PYTHONPATH=src python3 bench/acme/inproc.py [--orders 300] [--concurrency 8] [--repeats 3] [--profile FILE]

Runs ``run.py``'s full order flow (new order, authorization, http-01 challenge with real
validation against pebble-challtestsrv on free ports, polls, finalize, download) against the
app ``create_app`` builds, called in this process as ASGI (no TLS, no sockets to the server),
on a SQLite home with its durable writes. Prints the CPU per order spent in the server:
the process CPU minus what the client spent signing and encoding its requests (timed around
that code, which awaits nothing). ``run.py`` and ``spy.py`` measure the whole server with
uvicorn and TLS, but on a shared two-core machine their orders/s and even their CPU per order
move by 20% from run to run; this leaves out the network, TLS and the other processes, so a
change of a few percent shows. ``--profile FILE`` writes cProfile stats of the last repeat.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import run
from connection import Response

from trustyard.api.app import create_app
from trustyard.ca.config import load_config
from trustyard.ca.home import InitOptions, init_home, load_authority

BASE = "https://127.0.0.1:8443"


class AsgiConnection:
    """``connection.Connection``'s ``request``, answered by calling the app in process."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def request(self, method: str, url: str, body: bytes = b"", content_type: str = "") -> Response:
        parts = urlsplit(url)
        headers = [(b"host", b"127.0.0.1:8443"), (b"content-length", str(len(body)).encode())]
        if content_type:
            headers.append((b"content-type", content_type.encode()))
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                 "scheme": "https", "path": parts.path, "raw_path": parts.path.encode(),
                 "query_string": parts.query.encode(), "root_path": "", "headers": headers,
                 "server": ("127.0.0.1", 8443), "client": ("127.0.0.1", 40000)}
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                await asyncio.sleep(3600)
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        status, answer, chunks = 0, {}, []

        async def send(message: dict[str, Any]) -> None:
            nonlocal status, answer
            if message["type"] == "http.response.start":
                status = message["status"]
                answer = {k.decode().lower(): v.decode() for k, v in message.get("headers", [])}
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, send)
        return Response(status, answer, b"".join(chunks))

    def close(self) -> None:
        pass


class TimedAccount(run.Account):
    """run.Account, with the CPU its signing and encoding take added up."""

    client_cpu = 0.0

    async def post(self, url: str, payload: Any = None) -> Response:
        real = self.http.request
        outer = self

        async def timed(method: str, url_: str, body: bytes = b"", content_type: str = "") -> Response:
            TimedAccount.client_cpu += time.process_time() - outer._started
            try:
                return await real(method, url_, body, content_type)
            finally:
                outer._started = time.process_time()

        self.http.request = timed  # type: ignore[method-assign]
        self._started = time.process_time()
        try:
            return await super().post(url, payload)
        finally:
            TimedAccount.client_cpu += time.process_time() - self._started
            self.http.request = real  # type: ignore[method-assign]


async def orders(app: Any, challtest_url: str, count: int, concurrency: int, interval: float,
                 label: str) -> tuple[float, float, int]:
    """(process CPU, client CPU, orders) for ``count`` orders after one warm-up order per client."""
    http = AsgiConnection(app)
    directory = (await http.request("GET", f"{BASE}/acme/acme/directory")).json()
    accounts = [TimedAccount(AsgiConnection(app), directory) for _ in range(concurrency)]
    challtests = [run.Connection(challtest_url) for _ in range(concurrency)]
    try:
        await asyncio.gather(*(a.register() for a in accounts))
        csr_key = run.ec.generate_private_key(run.ec.SECP256R1())
        await asyncio.gather(*(run.one_order(a, c, f"{label}-w{i}.bench.internal", csr_key, interval)
                               for i, (a, c) in enumerate(zip(accounts, challtests))))
        counter = iter(range(count))

        async def client(account: TimedAccount, challtest: Any) -> None:
            for i in counter:
                await run.one_order(account, challtest, f"{label}-{i}.bench.internal", csr_key, interval)

        TimedAccount.client_cpu = 0.0
        started, written = time.process_time(), _written()
        await asyncio.gather(*(client(a, c) for a, c in zip(accounts, challtests)))
        orders.bytes_written = _written() - written  # type: ignore[attr-defined]
        return time.process_time() - started, TimedAccount.client_cpu, count
    finally:
        for c in challtests:
            c.close()


def _written() -> int:
    """Bytes this process has written by system call (the WAL, the checkpoints, the audit
    checkpoint file): a figure no other process's load changes."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--poll-ms", type=int, default=10)
    parser.add_argument("--profile", type=Path, help="cProfile stats of the last repeat, to this file")
    args = parser.parse_args()
    import spy  # challtestsrv on free ports

    chall, ports = spy.challtestsrv()
    os.environ.update({"TRUSTYARD_ACME_HTTP_PORT": str(ports["http"]), "TRUSTYARD_ACME_TLS_PORT": str(ports["tls"]),
                       "TRUSTYARD_ACME_RESOLVER": f"127.0.0.1:{ports['dns']}"})
    try:
        with tempfile.TemporaryDirectory(prefix="bench-acme-inproc-") as tmp:
            home = Path(tmp) / "ca"
            init_home(home, run.PASSWORD.encode(), InitOptions(allow=("*.internal",)))
            config_path = home / "trustyard.toml"
            import tomllib

            import tomli_w
            doc = tomllib.loads(config_path.read_text())
            doc["acme"] = {"allow_targets": ["127.0.0.0/8"]}
            config_path.write_text(tomli_w.dumps(doc))
            config = load_config(home)
            authority = load_authority(home, run.PASSWORD.encode(), config=config)
            app = create_app(authority, config)
            gc.collect()  # as trustyard.api.app.app_from_env leaves a worker
            gc.freeze()
            gc.set_threshold(20_000, 50, 100)
            results = []

            async def session() -> None:
                async with app.router.lifespan_context(app):
                    for repeat in range(args.repeats):
                        profiler = cProfile.Profile() if args.profile and repeat == args.repeats - 1 else None
                        if profiler:
                            profiler.enable()
                        cpu, client_cpu, done = await orders(app, f"http://127.0.0.1:{ports['management']}",
                                                             args.orders, args.concurrency, args.poll_ms / 1000,
                                                             f"r{repeat}")
                        if profiler:
                            profiler.disable()
                            profiler.dump_stats(args.profile)
                        results.append(((cpu - client_cpu) * 1000 / done, cpu * 1000 / done,
                                        orders.bytes_written / done / 1024))  # type: ignore[attr-defined]
                        print(f"repeat {repeat}: server {results[-1][0]:.3f} ms/order "
                              f"(process {results[-1][1]:.3f}), {results[-1][2]:.1f} KiB written/order, "
                              f"load {os.getloadavg()[0]:.1f}", file=sys.stderr)

            run.uvloop.run(session())
            authority.store.close()
    finally:
        run.stop(chall)
    server = [r[0] for r in results]
    print(json.dumps({"server_cpu_ms_per_order_min": round(min(server), 3),
                      "server_cpu_ms_per_order_median": round(statistics.median(server), 3),
                      "repeats": [round(s, 3) for s in server],
                      "kib_written_per_order": round(statistics.median(r[2] for r in results), 1),
                      "load": round(os.getloadavg()[0], 1)}))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    sys.exit(main())
