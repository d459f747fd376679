"""bench/acme: trustyard's ACME server vs step-ca and Debian's Pebble, same load generator, same run.

    python3 bench/acme/run.py [--orders 300] [--rounds 5] [--concurrency 16] [--poll-ms 25] [--quick] [--json]

Every server validates http-01 for real against the same pebble-challtestsrv (its DNS answers
every name with 127.0.0.1, its HTTP server holds the key authorizations). Its http-01 server
listens on 127.0.0.1:80 for all of them, because step-ca validates on port 80 only (so the
benchmark needs root, or the right to bind port 80). trustyard runs as `trustyard serve`
(SQLite with fsync: persistence on). step-ca (smallstep/certificates 0.19, built from Debian's
sources by `stepca.py`) runs the way it ships: Badger v2 database on disk with synced writes,
one ACME provisioner, `--resolver` pointed at challtestsrv's DNS. Pebble runs in memory with
PEBBLE_VA_NOSLEEP=1 (no artificial validation delay), PEBBLE_AUTHZREUSE=0 (every order
validates, as on the others) and no nonce rejection.

The load generator (asyncio on uvloop, one ACME account and one keep-alive connection per
concurrent client, responses parsed by httptools: `connection.py`) runs the whole flow per
order: newOrder, authorization, challenge response, polling the authorization, polling the
order, finalize, polling the order, certificate download. Polls sleep --poll-ms. It needs
about 2 ms of CPU per order, a third of what the cheaper server needs, so the server is the
bottleneck; `load generator ... of a core` in the summary shows how far from it the load
generator stayed. Prints and writes to bench/out/acme.json: orders/s, p50/p99 order latency,
requests per order, CPU per order, and the ratios trustyard/step-ca and trustyard/Pebble.
``--quick`` is a small run (one round of 20 orders, trustyard with its default workers only)
for the smoke test; it writes bench/out/acme-quick.json.

Every server runs --rounds times, in a rotating order, each on a fresh start; the
figures are the medians over the rounds, because on a shared two-core machine one run can
be 20% slower than the next for reasons outside the benchmark. trustyard runs with one
worker per core (its default) and with one worker (--workers). A server that stops
answering for 10 s is restarted and the round run again (see `Stalled`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import stepca
import uvloop
from connection import Connection, Response
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "bench-password-not-a-secret"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_tools() -> Path:
    """Installs Pebble when it is missing; builds step-ca when it is missing (see stepca.py); its path."""
    if not shutil.which("pebble") or not shutil.which("pebble-challtestsrv"):
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "pebble"], check=True, stdout=subprocess.DEVNULL)
    return stepca.ensure_step_ca()


# -- the load generator ------------------------------------------------------------------------------

class Account:
    def __init__(self, http: Connection, directory: dict[str, Any]) -> None:
        self.http, self.directory = http, directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        numbers = self.key.public_key().public_numbers()
        self.jwk = {"crv": "P-256", "kty": "EC", "x": b64(numbers.x.to_bytes(32, "big")),
                    "y": b64(numbers.y.to_bytes(32, "big"))}
        canonical = json.dumps(self.jwk, sort_keys=True, separators=(",", ":")).encode()
        self.thumbprint = b64(hashlib.sha256(canonical).digest())
        self.kid: str | None = None
        self.nonce: str | None = None
        self.bad_nonces = 0
        self.requests = 0  # to the ACME server: what one order costs the load generator and the server

    async def post(self, url: str, payload: Any = None) -> Response:
        for _ in range(5):
            if not self.nonce:
                self.requests += 1
                self.nonce = (await self.http.request("GET", self.directory["newNonce"])).headers["replay-nonce"]
            header: dict[str, Any] = {"alg": "ES256", "nonce": self.nonce, "url": url}
            header.update({"kid": self.kid} if self.kid else {"jwk": self.jwk})
            protected = b64(json.dumps(header).encode())
            body = "" if payload is None else b64(json.dumps(payload).encode())
            r, s = decode_dss_signature(self.key.sign(f"{protected}.{body}".encode(), ec.ECDSA(hashes.SHA256())))
            jws = {"protected": protected, "payload": body,
                   "signature": b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))}
            self.requests += 1
            response = await self.http.request("POST", url, json.dumps(jws).encode(), "application/jose+json")
            self.nonce = response.headers.get("replay-nonce")
            if response.status == 400 and b"badNonce" in response.body:
                self.bad_nonces += 1
                continue
            return response
        raise RuntimeError("five badNonce in a row")

    async def register(self) -> None:
        response = await self.post(self.directory["newAccount"], {"termsOfServiceAgreed": True})
        if response.status not in (200, 201):
            raise RuntimeError(f"newAccount: {response.status} {response.body[:200]!r}")
        self.kid = response.headers["location"]


async def poll(account: Account, url: str, done: tuple[str, ...], interval: float, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        doc = (await account.post(url)).json()
        if doc.get("status") in done:
            return doc
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} stuck in {doc.get('status')}")
        await asyncio.sleep(interval)


async def one_order(account: Account, challtest: Connection, name: str, csr_key: Any,
                    interval: float) -> None:
    response = await account.post(account.directory["newOrder"], {"identifiers": [{"type": "dns", "value": name}]})
    if response.status != 201:
        raise RuntimeError(f"newOrder: {response.status} {response.body[:200]!r}")
    order_url, order = response.headers["location"], response.json()
    for authz_url in order["authorizations"]:
        authz = (await account.post(authz_url)).json()
        if authz["status"] == "valid":
            continue
        challenge = next(c for c in authz["challenges"] if c["type"] == "http-01")
        added = await challtest.request("POST", "/add-http01", json.dumps(
            {"token": challenge["token"], "content": f"{challenge['token']}.{account.thumbprint}"}).encode())
        if added.status != 200:
            raise RuntimeError(f"challtestsrv add-http01: {added.status}")
        await account.post(challenge["url"], {})
        authz = await poll(account, authz_url, ("valid", "invalid"), interval)
        if authz["status"] != "valid":
            raise RuntimeError(f"authorization invalid: {json.dumps(authz)[:300]}")
    await poll(account, order_url, ("ready", "invalid"), interval)
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
           .sign(csr_key, hashes.SHA256()).public_bytes(Encoding.DER))
    response = await account.post(order["finalize"], {"csr": b64(csr)})
    if response.status != 200:
        raise RuntimeError(f"finalize: {response.status} {response.body[:200]!r}")
    order = await poll(account, order_url, ("valid", "invalid"), interval)
    if order["status"] != "valid":
        raise RuntimeError(f"order invalid: {json.dumps(order)[:300]}")
    cert = await account.post(order["certificate"])
    if cert.status != 200 or b"BEGIN CERTIFICATE" not in cert.body:
        raise RuntimeError(f"download: {cert.status}")


class Stalled(RuntimeError):
    """The server stopped answering: no order finished for STALL_SECONDS.

    Debian's Pebble 2.4.0 deadlocks now and then under this load (about one round in six of
    300 orders here): a SIGQUIT dump shows every handler waiting on its MemoryStore lock, the
    store's RWMutex and the per-object locks taken in opposite orders. The round is then run
    again on a fresh start and the stall is counted in the results, for any server."""


STALL_SECONDS = 10.0


async def drive(directory_url: str, verify: Any, challtest_url: str, orders: int, concurrency: int,
                interval: float, label: str) -> dict[str, Any]:
    # One connection per client to the server and one to challtestsrv, as each real ACME client has.
    https = [Connection(directory_url, verify) for _ in range(concurrency)]
    challtests = [Connection(challtest_url) for _ in range(concurrency)]
    with contextlib.ExitStack() as clients:
        for connection in https + challtests:
            clients.callback(connection.close)
        directory = (await https[0].request("GET", directory_url)).json()
        accounts = [Account(http, directory) for http in https]
        await asyncio.gather(*(a.register() for a in accounts))
        for account in accounts:
            account.requests = 0
        csr_key = ec.generate_private_key(ec.SECP256R1())
        counter = iter(range(orders + concurrency))
        latencies: list[float] = []
        errors: list[str] = []
        warmup = concurrency  # the first order of each client is not measured (connections, caches)

        async def client(account: Account, challtest: Connection) -> None:
            for i in counter:
                started = time.perf_counter()
                try:
                    await one_order(account, challtest, f"{label}-{i}.bench.internal", csr_key, interval)
                    if i >= warmup:
                        latencies.append(time.perf_counter() - started)
                except Exception as exc:  # a failed order is counted, not fatal
                    errors.append(str(exc)[:200])

        async def watchdog() -> None:
            seen = -1
            while len(latencies) + len(errors) != seen:
                seen = len(latencies) + len(errors)
                await asyncio.sleep(STALL_SECONDS)
            raise Stalled(f"{label}: no order finished in {STALL_SECONDS} s")

        work = asyncio.gather(*(client(a, c) for a, c in zip(accounts, challtests)))
        dog = asyncio.ensure_future(watchdog())
        started = time.perf_counter()
        done, _ = await asyncio.wait((work, dog), return_when=asyncio.FIRST_COMPLETED)
        elapsed = time.perf_counter() - started
        dog.cancel()
        if dog in done:  # stalled: stop the clients, then report it
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await work
            dog.result()
        await work
    latencies.sort()
    done = len(latencies)
    # orders/s over the measured orders: total wall time scaled by the measured share
    measured_wall = elapsed * done / max(done + warmup, 1)
    return {
        "orders": done, "errors": len(errors), "error_samples": errors[:3],
        "seconds": round(elapsed, 2),
        "orders_per_s": round(done / measured_wall, 2) if done else 0.0,
        "p50_ms": round(statistics.median(latencies) * 1000, 1) if latencies else None,
        "p99_ms": round(latencies[min(done - 1, int(done * 0.99))] * 1000, 1) if latencies else None,
        "bad_nonce_retries": sum(a.bad_nonces for a in accounts),
        "requests_per_order": round(sum(a.requests for a in accounts) / (done + len(errors) + warmup), 2),
        "latencies": latencies,
    }


# -- the servers -------------------------------------------------------------------------------------

HTTP01_PORT = 80  # step-ca validates http-01 on port 80 only; the other servers are pointed there too


def start_challtestsrv() -> tuple[subprocess.Popen[bytes], dict[str, int]]:
    with socket.socket() as probe:  # fail with the reason, not a challtestsrv that exits silently
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", HTTP01_PORT))
        except OSError as exc:
            raise SystemExit(f"bench/acme: cannot listen on 127.0.0.1:{HTTP01_PORT} for the http-01 "
                             f"responder ({exc}); it needs root (step-ca validates on port 80 only) and "
                             f"the port free") from exc
    ports = {"management": free_port(), "http": HTTP01_PORT, "dns": free_port(), "tls": free_port()}
    process = subprocess.Popen(
        ["pebble-challtestsrv", "-management", f"127.0.0.1:{ports['management']}",
         "-http01", f"127.0.0.1:{ports['http']}", "-https01", "", "-tlsalpn01", f"127.0.0.1:{ports['tls']}",
         "-dns01", f"127.0.0.1:{ports['dns']}", "-defaultIPv6", ""],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: httpx.post(f"http://127.0.0.1:{ports['management']}/clear-txt",
                                  json={"host": "x.invalid."}, timeout=1))
    return process, ports


def wait_until(probe: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            probe()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def start_trustyard(tmp: Path, ports: dict[str, int], workers: int) -> tuple[subprocess.Popen[bytes], str, str]:
    import tomllib

    import tomli_w

    home = tmp / "trustyard"
    env = {**os.environ, "TRUSTYARD_PASSWORD": PASSWORD}
    subprocess.run([sys.executable, "-m", "trustyard", "init", "--home", str(home), "--allow", "*.internal"],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    config_path = home / "trustyard.toml"
    doc = tomllib.loads(config_path.read_text())
    doc["acme"] = {"allow_targets": ["127.0.0.0/8"]}
    config_path.write_text(tomli_w.dumps(doc))
    port = free_port()
    env.update({"TRUSTYARD_ACME_HTTP_PORT": str(ports["http"]), "TRUSTYARD_ACME_TLS_PORT": str(ports["tls"]),
                "TRUSTYARD_ACME_RESOLVER": f"127.0.0.1:{ports['dns']}"})
    log = (tmp / "trustyard.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "trustyard", "serve", "--home", str(home), "--listen",
                                f"127.0.0.1:{port}", "--workers", str(workers), "--log-level", "warning"],
                               env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"https://127.0.0.1:{port}/acme/acme/directory"
    root = str(home / "ca/root.crt")
    wait_until(lambda: httpx.get(url, verify=root, timeout=2).raise_for_status())
    return process, url, root


def start_pebble(tmp: Path, ports: dict[str, int]) -> tuple[subprocess.Popen[bytes], str, str]:
    # Pebble's HTTPS listener needs a certificate: a throwaway one, made here, never stored.
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "pebble bench")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=1))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(__import__("ipaddress").ip_address(
                "127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    (tmp / "pebble.crt").write_bytes(cert.public_bytes(Encoding.PEM))
    (tmp / "pebble.key").write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    port = free_port()
    (tmp / "pebble.json").write_text(json.dumps({"pebble": {
        "listenAddress": f"127.0.0.1:{port}", "managementListenAddress": f"127.0.0.1:{free_port()}",
        "certificate": str(tmp / "pebble.crt"), "privateKey": str(tmp / "pebble.key"),
        "httpPort": ports["http"], "tlsPort": ports["tls"], "ocspResponderURL": "",
        "externalAccountBindingRequired": False}}))
    env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_AUTHZREUSE": "0", "PEBBLE_WFE_NONCEREJECT": "0"}
    log = (tmp / "pebble.log").open("wb")
    process = subprocess.Popen(["pebble", "-config", str(tmp / "pebble.json"), "-dnsserver",
                                f"127.0.0.1:{ports['dns']}"], env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    url = f"https://127.0.0.1:{port}/dir"
    wait_until(lambda: httpx.get(url, verify=str(tmp / "pebble.crt"), timeout=2).raise_for_status())
    return process, url, str(tmp / "pebble.crt")


def start_step_ca(tmp: Path, ports: dict[str, int], binary: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    port = free_port()
    config, root = stepca.write_config(tmp, port)
    log = (tmp / "step-ca.log").open("wb")
    # flags before the config file: urfave/cli v1 stops parsing flags at the first argument
    process = subprocess.Popen([str(binary), "--resolver", f"127.0.0.1:{ports['dns']}", str(config)],
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"https://127.0.0.1:{port}/acme/acme/directory"
    wait_until(lambda: httpx.get(url, verify=str(root), timeout=2).raise_for_status())
    return process, url, str(root)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def session_cpu_seconds(sid: int) -> float:
    """User + system CPU of every live process in session ``sid`` (a server and its workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    latencies = sorted(x for r in rounds for x in r.pop("latencies"))
    done = len(latencies)
    return {
        "orders_per_s": round(statistics.median(r["orders_per_s"] for r in rounds), 2),
        "p50_ms": round(statistics.median(latencies) * 1000, 1) if latencies else None,
        "p99_ms": round(latencies[min(done - 1, int(done * 0.99))] * 1000, 1) if latencies else None,
        "server_cpu_ms_per_order": round(statistics.median(r["server_cpu_ms_per_order"] for r in rounds), 2),
        "loadgen_cpu_ms_per_order": round(statistics.median(r["loadgen_cpu_ms_per_order"] for r in rounds), 2),
        "requests_per_order": statistics.median(r["requests_per_order"] for r in rounds),
        # the share of one core the (single-threaded) load generator used: near 1, it would set the pace
        "loadgen_core_share": round(statistics.median(r["loadgen_cpu_ms_per_order"] * r["orders_per_s"] / 1000
                                                      for r in rounds), 2),
        "orders": done, "errors": sum(r["errors"] for r in rounds), "rounds": rounds,
    }


def one_round(where: Path, label: str, ports: dict[str, int], challtest_url: str, args: argparse.Namespace,
              interval: float) -> dict[str, Any]:
    """One server, freshly started in ``where``, under the load generator; its figures."""
    where.mkdir()
    if label == "pebble":
        process, url, verify = start_pebble(where, ports)
    elif label == "step-ca":
        process, url, verify = start_step_ca(where, ports, args.step_ca)
    else:
        process, url, verify = start_trustyard(where, ports, int(label.rsplit("-w", 1)[1]))
    try:
        server_before, own_before = session_cpu_seconds(process.pid), own_cpu_seconds()
        result = uvloop.run(drive(url, verify, challtest_url, args.orders, args.concurrency, interval, label))
        all_orders = result["orders"] + result["errors"] + args.concurrency  # with the warm-up
        result["server_cpu_ms_per_order"] = round(
            (session_cpu_seconds(process.pid) - server_before) * 1000 / all_orders, 2)
        result["loadgen_cpu_ms_per_order"] = round((own_cpu_seconds() - own_before) * 1000 / all_orders, 2)
        return result
    finally:
        stop(process)


PEERS = ("step-ca", "pebble")
GOALS = {"step-ca": 1.5, "pebble": 1.0}  # issue 19: trustyard's orders/s at least this many times the peer's


def ratios_to(results: dict[str, Any], label: str, peer: str) -> dict[str, Any]:
    mine, theirs = results[label], results[peer]
    return {
        "median_ratio": round(mine["orders_per_s"] / theirs["orders_per_s"], 3) if theirs["orders_per_s"] else None,
        "per_round": [round(t["orders_per_s"] / p["orders_per_s"], 3)
                      for t, p in zip(mine["rounds"], theirs["rounds"]) if p["orders_per_s"]],
    }


def compare(results: dict[str, Any], labels: list[str]) -> dict[str, Any]:
    """Each trustyard against each peer: the orders/s ratios, the p99s, and whether issue 19's goals hold."""
    out: dict[str, Any] = {}
    for label in labels:
        if label in PEERS:
            continue
        mine = results[label]
        entry: dict[str, Any] = {peer: ratios_to(results, label, peer) for peer in PEERS}
        goals = {f"orders_per_s >= {GOALS[peer]}x {peer}": (entry[peer]["median_ratio"] or 0) >= GOALS[peer]
                 for peer in PEERS}
        step_p99 = results["step-ca"]["p99_ms"]
        goals["p99 <= step-ca's"] = mine["p99_ms"] is not None and step_p99 is not None and mine["p99_ms"] <= step_p99
        out[label] = {**entry, "p99_ms": mine["p99_ms"], "step_ca_p99_ms": step_p99, "goals": goals}
    return out


def print_summary(results: dict[str, Any], comparison: dict[str, Any], labels: list[str], width: int) -> None:
    print(file=OUT)
    for label in labels:
        r = results[label]
        print(f"{label:>{width}}: median {r['orders_per_s']:7.2f} orders/s  p50 {r['p50_ms']} ms  p99 {r['p99_ms']} ms  "
              f"server CPU {r['server_cpu_ms_per_order']} ms/order  load generator "
              f"{r['loadgen_core_share']:.0%} of a core"
              + (f"  (stalled {r['stalls']}x, rounds rerun)" if r["stalls"] else ""), file=OUT)
    print(file=OUT)
    print(f"{'':>{width}}  {'/ step-ca orders/s (per round)':<40} {'/ Pebble orders/s (per round)':<40} "
          f"{'p99 ms vs step-ca':>18}", file=OUT)
    for label, c in comparison.items():
        cells = [f"{c[peer]['median_ratio']}x ({', '.join(str(x) for x in c[peer]['per_round'])})" for peer in PEERS]
        print(f"{label:>{width}}  {cells[0]:<40} {cells[1]:<40} {c['p99_ms']!s:>8} vs {c['step_ca_p99_ms']!s:<8}",
              file=OUT)
        print(f"{'':>{width}}  goals: " + ", ".join(f"{goal} {'met' if ok else 'NOT met'}"
                                                    for goal, ok in c["goals"].items()), file=OUT)


OUT = sys.stdout  # the human-readable table; stderr with --json, whose stdout is the JSON alone


def main() -> int:
    global OUT
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=300, help="measured orders per server and round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; each runs every server, in a rotating order")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent ACME clients (>= 16)")
    parser.add_argument("--poll-ms", type=int, default=25, help="sleep between polls")
    parser.add_argument("--workers", default=f"{os.cpu_count() or 1},1",
                        help="trustyard worker counts to run, comma-separated (default: one per core, and 1)")
    parser.add_argument("--quick", action="store_true",
                        help="a small run for the smoke test: 1 round of 20 orders, trustyard with one worker per core")
    parser.add_argument("--json", action="store_true", help="print the JSON result alone on stdout (table on stderr)")
    args = parser.parse_args()
    if args.quick:
        args.orders, args.rounds, args.workers = 20, 1, str(os.cpu_count() or 1)
    if args.json:
        OUT = sys.stderr
    worker_counts = list(dict.fromkeys(int(w) for w in args.workers.split(",")))
    args.step_ca = ensure_tools()
    load_before = os.getloadavg()
    interval = args.poll_ms / 1000
    labels = [f"trustyard-w{w}" for w in worker_counts] + list(PEERS)
    rounds: dict[str, list[dict[str, Any]]] = {label: [] for label in labels}
    stalls = dict.fromkeys(labels, 0)
    width = max(len(label) for label in labels)
    print(f"{'round':>5} {'server':>{width}} {'orders/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'requests/order':>15} "
          f"{'server CPU ms/order':>20} {'load generator CPU ms/order':>28}", file=OUT, flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-acme-") as tmp_text:
        tmp = Path(tmp_text)
        challtest, ports = start_challtestsrv()
        challtest_url = f"http://127.0.0.1:{ports['management']}"
        try:
            for n in range(1, args.rounds + 1):
                order = labels[(n - 1) % len(labels):] + labels[:(n - 1) % len(labels)]  # rotate who goes first
                for label in order:
                    for attempt in range(1, 4):
                        try:
                            result = one_round(tmp / f"round{n}-{label}-{attempt}", label, ports, challtest_url,
                                               args, interval)
                            break
                        except Stalled as exc:  # see Stalled: a fresh start, up to three times
                            stalls[label] += 1
                            print(f"{n:>5} {label:>{width}} stopped answering ({exc}); restarting it",
                                  file=OUT, flush=True)
                    else:
                        raise SystemExit(f"{label} stalled three times in round {n}")
                    rounds[label].append({"round": n, **result})
                    print(f"{n:>5} {label:>{width}} {result['orders_per_s']:>9.2f} {result['p50_ms']!s:>7} "
                          f"{result['p99_ms']!s:>7} {result['requests_per_order']:>15} "
                          f"{result['server_cpu_ms_per_order']:>20} "
                          f"{result['loadgen_cpu_ms_per_order']:>28}", file=OUT, flush=True)
        finally:
            stop(challtest)
    results = {label: {**summary(runs), "stalls": stalls[label]} for label, runs in rounds.items()}
    comparison = compare(results, labels)
    doc = {
        "benchmark": "acme full flow (newOrder, authz, http-01 challenge, finalize, download)",
        "concurrency": args.concurrency, "poll_ms": args.poll_ms, "orders_per_server_and_round": args.orders,
        "rounds": args.rounds, "quick": args.quick,
        "trustyard_storage": "SQLite, WAL, every certificate fsynced before it is answered (persistence on)",
        "step_ca_storage": "Badger v2 on disk, synced writes (as shipped)",
        "pebble_storage": "in memory",
        "challenge_responder": f"pebble-challtestsrv, http-01 on 127.0.0.1:{HTTP01_PORT} (same for all servers)",
        "step_ca": {"binary": str(args.step_ca), "stamp": json.loads((args.step_ca.parent / "stamp.json").read_text())},
        "servers": results, "comparison": comparison,
        "machine": {"cpus": os.cpu_count(), "cpu_model": cpu_model(), "load_average_before": load_before,
                    "load_average_after": os.getloadavg(),
                    "python": platform.python_version(), "platform": platform.platform()},
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    out = ROOT / "bench/out" / ("acme-quick.json" if args.quick else "acme.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print_summary(results, comparison, labels, width)
    print(f"-> {out.relative_to(ROOT)}", file=OUT)
    if args.json:
        print(json.dumps(doc))
    return 0 if all(r["errors"] == 0 for r in results.values()) else 1


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


if __name__ == "__main__":
    sys.exit(main())
