"""bench/workers: does a second worker (SQLite) or replica (PostgreSQL) add throughput?

    python3 bench/workers/run.py [--rounds 3] [--seconds 10] [--orders 300] [--postgres]

SQLite (the default home): `trustyard serve --workers 1` and `--workers 2`, each freshly
started on a fresh home, in alternating order for --rounds rounds, under the same load:
REST issuance (`wrk -c16` posting a CSR and a one-time token per request, as bench/issue)
and full ACME orders (bench/acme's load generator, 16 clients, http-01 validated for real
against pebble-challtestsrv). Prints every round, the medians, and the ratio 2 workers /
1 worker for certificates/s and orders/s; the goal is >= 1.3x on two cores.

--lock: the write lock alone, without HTTP: one or two processes, each an event loop with 16
clients doing a little CPU work and a durable audit append, with ``store.loopwait`` (a taken
lock lets the loop run) and without it (a taken lock blocks the loop, as before).

--postgres: one throwaway PostgreSQL cluster (Debian's binaries, fsync on), one home on it,
and 1, 2 and 3 `trustyard serve --workers 1` replicas of that home on their own ports; the
16 wrk connections are spread over the replicas (one wrk per replica, each with its share
of the connections and of the tokens), certificates/s summed. Prints the table and the
ratios to one replica.

The machine is usually shared: the load average is printed before every measurement,
each figure is the median over the rounds, and the rounds alternate which count runs first.
Writes bench/out/workers.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
LUA = ROOT / "bench/issue/post.lua"
PASSWORD = "bench-password-not-a-secret"
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench/acme"))  # bench/acme/run.py imports its neighbours by name
# the servers this starts (here and in bench/acme) run this checkout's trustyard, not an installed one
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH", "")) if p)


def acme_bench() -> Any:
    """bench/acme/run.py: its load generator, challenge responder and trustyard round."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("acme_bench", ROOT / "bench/acme/run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def load() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def env_for(home: Path) -> dict[str, str]:
    return {**os.environ, "TRUSTYARD_PASSWORD": PASSWORD, "TRUSTYARD_HOME": str(home)}


def init_home(home: Path, database_url: str | None = None) -> None:
    extra = ["--database-url", database_url] if database_url else []
    subprocess.run([sys.executable, "-m", "trustyard", "init", "--allow", "*.internal", *extra],
                   env=env_for(home), check=True, stdout=subprocess.DEVNULL)


def token_files(home: Path, parts: int, count: int, where: Path) -> list[Path]:
    """``count`` requests (a CSR and a one-time token bound to its names), dealt into ``parts`` files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding

    from trustyard.ca import tokens as token_lib
    from trustyard.ca.config import load_config
    from trustyard.ca.home import load_key
    from trustyard.units import parse_duration

    config = load_config(home)
    key = load_key(config, "provisioners/default.key", PASSWORD.encode())
    csrs = []
    for i in range(100):
        names = [f"svc{i}.bench.internal"]
        csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
               .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
               .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256()))
        csrs.append((csr.public_bytes(Encoding.PEM).decode(), names))
    files = [where / f"tokens-{n}.jsonl" for n in range(parts)]
    handles = [f.open("w") for f in files]
    try:
        ttl = parse_duration("1h")
        for i in range(count):
            csr, names = csrs[i % len(csrs)]
            token, _ = token_lib.mint(key, "default", names[0], names, ttl)
            handles[i % parts].write(json.dumps({"csr": csr, "token": token}) + "\n")
    finally:
        for handle in handles:
            handle.close()
    return files


def serve(home: Path, workers: int, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    import httpx

    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "trustyard", "serve", "--listen", f"127.0.0.1:{port}",
                                "--workers", str(workers), "--log-level", "warning"],
                               env=env_for(home), stdout=log.open("wb"), stderr=subprocess.STDOUT,
                               start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(f"https://127.0.0.1:{port}/healthz", verify=str(home / "ca/root.crt"), timeout=2)
            return process, port
        except httpx.HTTPError:
            if process.poll() is not None:
                raise RuntimeError(f"trustyard serve exited:\n{log.read_text()}") from None
            time.sleep(0.2)
    raise RuntimeError(f"trustyard serve did not come up:\n{log.read_text()}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


def session_cpu_seconds(sid: int) -> float:
    return float(acme_bench().session_cpu_seconds(sid))


def wrk_many(ports: list[int], bodies: list[Path], seconds: int, connections: int) -> dict[str, float]:
    """One wrk per port, started together, the connections shared out; requests summed."""
    share = [connections // len(ports) + (1 if n < connections % len(ports) else 0) for n in range(len(ports))]
    procs = [subprocess.Popen(["wrk", "-t1", f"-c{c}", f"-d{seconds}s", "--timeout", "10s", "-s", str(LUA),
                               f"https://127.0.0.1:{port}/v1/sign"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env={**os.environ, "BODIES": str(body), "WRK_THREADS": "1"})
             for port, body, c in zip(ports, bodies, share, strict=True)]
    requests = errors = 0.0
    duration = 0.0
    p99s = []
    for proc in procs:
        out, err = proc.communicate(timeout=seconds + 60)
        match = re.search(r"RESULT requests=(\d+) errors=(\d+) seconds=([\d.]+) p50_ms=([\d.]+) p99_ms=([\d.]+)", out)
        if not match:
            raise RuntimeError(f"wrk failed:\n{out}\n{err}")
        requests += float(match[1])
        errors += float(match[2])
        duration = max(duration, float(match[3]))
        p99s.append(float(match[5]))
    return {"certs_per_s": (requests - errors) / duration, "errors": errors, "p99_ms": max(p99s),
            "requests": requests}


# -- SQLite: 1 worker vs 2 -------------------------------------------------------------------------

def rest_round(where: Path, workers: int, seconds: int, tokens: int) -> dict[str, Any]:
    home = where / "home"
    init_home(home)
    bodies = token_files(home, 1, tokens, where)
    process, port = serve(home, workers, where / "serve.log")
    try:
        before = session_cpu_seconds(process.pid)
        result = wrk_many([port], bodies, seconds, 16)
        result["server_cpu_ms_per_cert"] = round((session_cpu_seconds(process.pid) - before) * 1000
                                                 / max(result["requests"], 1), 2)
    finally:
        stop(process)
    return result


def acme_round(where: Path, workers: int, orders: int, ports: dict[str, int], challtest_url: str) -> dict[str, Any]:
    args = SimpleNamespace(orders=orders, concurrency=16)
    result: dict[str, Any] = acme_bench().one_round(where, f"trustyard-w{workers}", ports, challtest_url, args, 0.025)
    result.pop("latencies", None)
    return result


def sqlite_bench(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    acme = acme_bench()
    counts = [1, 2]
    rows: list[dict[str, Any]] = []
    print(f"{'round':>5} {'workers':>7} {'load':>5} {'REST certs/s':>12} {'p99 ms':>7} {'CPU ms/cert':>11} "
          f"{'load':>5} {'ACME orders/s':>13} {'p99 ms':>7} {'CPU ms/order':>12}", flush=True)
    challtest, ports = acme.start_challtestsrv()
    try:
        for n in range(1, args.rounds + 1):
            for workers in counts if n % 2 else counts[::-1]:
                where = tmp / f"r{n}-w{workers}"
                where.mkdir()
                rest_load = load()
                rest = rest_round(where / "rest", workers, args.seconds, args.tokens)
                acme_load = load()
                (where / "acme").mkdir()
                orders = acme_round(where / "acme" / "run", workers, args.orders, ports,
                                    f"http://127.0.0.1:{ports['management']}")
                rows.append({"round": n, "workers": workers, "rest": rest, "acme": orders,
                             "load_before_rest": rest_load, "load_before_acme": acme_load})
                print(f"{n:>5} {workers:>7} {rest_load:>5.1f} {rest['certs_per_s']:>12.0f} {rest['p99_ms']:>7.1f} "
                      f"{rest['server_cpu_ms_per_cert']:>11.2f} {acme_load:>5.1f} {orders['orders_per_s']:>13.1f} "
                      f"{orders['p99_ms']!s:>7} {orders['server_cpu_ms_per_order']:>12.2f}", flush=True)
    finally:
        acme.stop(challtest)
    medians: dict[int, dict[str, float]] = {}
    for workers in counts:
        mine = [r for r in rows if r["workers"] == workers]
        medians[workers] = {
            "rest_certs_per_s": statistics.median(r["rest"]["certs_per_s"] for r in mine),
            "rest_cpu_ms_per_cert": statistics.median(r["rest"]["server_cpu_ms_per_cert"] for r in mine),
            "acme_orders_per_s": statistics.median(r["acme"]["orders_per_s"] for r in mine),
            "acme_cpu_ms_per_order": statistics.median(r["acme"]["server_cpu_ms_per_order"] for r in mine),
        }
    ratios = {"rest": medians[2]["rest_certs_per_s"] / medians[1]["rest_certs_per_s"],
              "acme": medians[2]["acme_orders_per_s"] / medians[1]["acme_orders_per_s"]}
    print()
    print(f"{'workers':>7} {'REST certs/s':>12} {'CPU ms/cert':>11} {'ACME orders/s':>13} {'CPU ms/order':>12}  (medians)")
    for workers in counts:
        m = medians[workers]
        print(f"{workers:>7} {m['rest_certs_per_s']:>12.0f} {m['rest_cpu_ms_per_cert']:>11.2f} "
              f"{m['acme_orders_per_s']:>13.1f} {m['acme_cpu_ms_per_order']:>12.2f}")
    print(f"ratio 2 workers / 1 worker: REST {ratios['rest']:.2f}x, ACME {ratios['acme']:.2f}x   (goal >= 1.3x)")
    return {"rows": rows, "medians": medians, "ratio_2_to_1": ratios}


# -- the write lock alone: waiting on the loop vs blocking it ---------------------------------------

def _writer(path: str, suspending: bool, seconds: float, queue: Any) -> None:
    """One worker's event loop: 16 clients, each a little CPU then a durable audit append."""
    import asyncio
    import resource

    import trustyard.store.engine as engine
    from trustyard.api.durability import durably
    from trustyard.store import AuditEvent, open_store

    if not suspending:  # the version before store.loopwait: a taken lock blocks the whole loop
        engine.can_suspend = lambda: False  # type: ignore[assignment]
    store = open_store(f"sqlite:///{path}", migrate=False)
    done = [0]

    def operation(i: int) -> None:
        sum(range(3000))  # the request's own work outside the lock (about what parsing a CSR costs)
        store.audit(AuditEvent(actor="bench", action="token.mint", target=f"t{i}", detail={}))

    async def client() -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            await durably(operation, done[0])
            done[0] += 1

    async def main() -> None:
        await asyncio.gather(*(client() for _ in range(16)))

    before = resource.getrusage(resource.RUSAGE_SELF)
    asyncio.run(main())
    after = resource.getrusage(resource.RUSAGE_SELF)
    queue.put((done[0], after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, store.lock_waits))
    store.close()


def lock_bench(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Processes of 16 writers each on one SQLite file: 1 vs 2 processes, with the loop waiting
    for the lock (store.loopwait) and with it blocked (as before), alternating, --rounds times."""
    import multiprocessing

    from trustyard.store import open_store

    context = multiprocessing.get_context("fork")
    rows = []
    print(f"{'round':>5} {'mode':>9} {'processes':>9} {'load':>5} {'commits/s':>9} {'CPU ms/commit':>13} "
          f"{'lock waits':>10}", flush=True)
    for n in range(1, args.rounds + 1):
        for mode in ("suspend", "block") if n % 2 else ("block", "suspend"):
            for processes in (1, 2):
                path = str(tmp / f"lock-{n}-{mode}-{processes}.db")
                open_store(f"sqlite:///{path}").close()
                queue = context.Queue()
                before = load()
                procs = [context.Process(target=_writer, args=(path, mode == "suspend", args.seconds, queue))
                         for _ in range(processes)]
                for proc in procs:
                    proc.start()
                results = [queue.get(timeout=args.seconds + 120) for _ in procs]
                for proc in procs:
                    proc.join()
                commits = sum(r[0] for r in results)
                row = {"round": n, "mode": mode, "processes": processes, "load_before": before,
                       "commits_per_s": commits / args.seconds,
                       "cpu_ms_per_commit": sum(r[1] for r in results) * 1000 / max(commits, 1),
                       "lock_waits": sum(r[2] for r in results)}
                rows.append(row)
                print(f"{n:>5} {mode:>9} {processes:>9} {before:>5.1f} {row['commits_per_s']:>9.0f} "
                      f"{row['cpu_ms_per_commit']:>13.3f} {row['lock_waits']:>10}", flush=True)
    ratios = {}
    for mode in ("suspend", "block"):
        median = {p: statistics.median(r["commits_per_s"] for r in rows if r["mode"] == mode and r["processes"] == p)
                  for p in (1, 2)}
        ratios[mode] = median[2] / median[1]
        print(f"{mode}: median commits/s 1 process {median[1]:.0f}, 2 processes {median[2]:.0f}: "
              f"{ratios[mode]:.2f}x")
    return {"rows": rows, "ratio_2_to_1": ratios}


# -- PostgreSQL: 1, 2, 3 replicas ---------------------------------------------------------------------

def postgres_cluster(root: Path) -> tuple[str, Any]:
    """initdb + pg_ctl (fsync on: persistence as deployed), as the postgres user when root."""
    bindir = next((c for c in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
                   if (c / "initdb").exists()), None)
    if bindir is None:
        raise SystemExit("PostgreSQL binaries not found (apt-get install postgresql)")
    root.mkdir(parents=True, exist_ok=True)
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    data = root / "data"
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8"],
                   check=True, capture_output=True)
    subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-t", "60",
                    "-o", f"-p {port} -k {root} -h 127.0.0.1 -c max_connections=300", "start"],
                   check=True, capture_output=True)

    def stop_cluster() -> None:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"], capture_output=True)

    import psycopg

    with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", autocommit=True) as conn:
        conn.execute("CREATE DATABASE trustyard")
    return f"postgresql://postgres@127.0.0.1:{port}/trustyard", stop_cluster


def postgres_bench(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    url, stop_cluster = postgres_cluster(tmp / "pg")
    counts = [1, 2, 3]
    rows: list[dict[str, Any]] = []
    try:
        home = tmp / "pg-home"
        init_home(home, url)
        print(f"{'round':>5} {'replicas':>8} {'load':>5} {'certs/s':>8} {'p99 ms':>7} {'errors':>6}", flush=True)
        for n in range(1, args.rounds + 1):
            for replicas in counts if n % 2 else counts[::-1]:
                where = tmp / f"pg-r{n}-{replicas}"
                where.mkdir()
                bodies = token_files(home, replicas, args.tokens, where)
                servers = [serve(home, 1, where / f"serve-{i}.log") for i in range(replicas)]
                try:
                    before = load()
                    result = wrk_many([port for _, port in servers], bodies, args.seconds, 16)
                finally:
                    for process, _ in servers:
                        stop(process)
                rows.append({"round": n, "replicas": replicas, "load_before": before, **result})
                print(f"{n:>5} {replicas:>8} {before:>5.1f} {result['certs_per_s']:>8.0f} {result['p99_ms']:>7.1f} "
                      f"{int(result['errors']):>6}", flush=True)
    finally:
        stop_cluster()
    medians = {r: statistics.median(x["certs_per_s"] for x in rows if x["replicas"] == r) for r in counts}
    print()
    print(f"{'replicas':>8} {'certs/s':>8} {'ratio to 1':>10}  (medians)")
    for r in counts:
        print(f"{r:>8} {medians[r]:>8.0f} {medians[r] / medians[1]:>9.2f}x")
    return {"rows": rows, "medians": medians}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration per REST measurement")
    parser.add_argument("--tokens", type=int, default=20000, help="one-time tokens minted per REST measurement")
    parser.add_argument("--orders", type=int, default=300, help="measured ACME orders per round")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL replicas 1, 2, 3 instead of SQLite workers")
    parser.add_argument("--lock", action="store_true",
                        help="the SQLite write lock alone: 1 vs 2 processes of 16 writers, the loop waiting for the "
                             "lock vs blocked on it (--seconds each)")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing (apt-get install wrk)")
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, load average {load():.2f} at start", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp_text:
        tmp = Path(tmp_text)
        if args.lock:
            doc = {"lock": lock_bench(args, tmp)}
        elif args.postgres:
            os.chmod(tmp, 0o755)  # the postgres user reaches its cluster below
            doc = {"postgres": postgres_bench(args, tmp)}
        else:
            doc = {"sqlite": sqlite_bench(args, tmp)}
    doc["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}
    doc["args"] = vars(args)
    out = ROOT / "bench/out/workers.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    existing = json.loads(out.read_text()) if out.exists() else {}
    existing.update(doc)
    out.write_text(json.dumps(existing, indent=2, default=str) + "\n")
    print(f"-> {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
