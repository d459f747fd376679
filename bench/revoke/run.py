"""bench/revoke: revocation with 1,000,000 revoked, unexpired certificates in the ledger.

    python3 bench/revoke/run.py [--revoked 1000000] [--small 1000] [--shards 16] [--seconds 10]
                                [--connections 16] [--workers 2] [--db-url postgresql://...] [--json]

One throwaway CA home (SQLite in $TMPDIR unless ``--db-url``) whose provisioner has ``crl =
true``; revoked certificates of its intermediate are written straight into the ledger (spread
over the shards by serial, as issuance does), with ``--good`` issued ones. The same run
measures at ``--small`` revoked and again at ``--revoked``:

- the revoke API's p50/p99: ``POST /v1/revoke`` (admin token, one kept-alive HTTPS connection)
  against ``trustyard serve`` for ``--revocations`` certificates issued for it; each marks its
  shard dirty and builds no CRL. Goal: p99 <= 50 ms and no growth with the count;
- the regeneration of the largest shard (query, build, sign, store; ``CrlJob.generate``, in
  process, serve stopped), its entries and its size in bytes. Goal: <= 2 s;

and at ``--revoked`` only, OCSP responses per second at ``--connections`` concurrent
connections: wrk drives ``trustyard serve`` (HTTPS, kept-alive connections: the CA serves
HTTPS only) and ``openssl ocsp -index`` (the reference responder: plain HTTP, single-threaded,
one request per connection, as it closes each after answering) with the same request file,
POST and GET alternating over a mix of good and revoked serials, after a warm-up each;
``openssl ocsp -multi WORKERS`` (as many processes as serve has workers) is measured too.
Answers are checked for a sample on both sides (ocsp_peer.check). Goal: >= 10x the reference.
The same load against nginx answering every request with one fixed response (ceiling.py) is
the most any responder could do here: its ratio over openssl bounds what the goal can reach.

Writes bench/out/revoke.json. ``--quick``: a small run for the smoke test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench" / "revoke"))
sys.path.insert(0, str(ROOT / "src"))

import ceiling  # noqa: E402
import httpx  # noqa: E402
import ledger as ledgers  # noqa: E402
import ocsp_peer  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.serialization import Encoding  # noqa: E402

from trustyard.testing import free_port  # noqa: E402
from trustyard.x509.keys import KeyType, generate_private_key  # noqa: E402
from trustyard.x509.names import parse_name  # noqa: E402

# -- trustyard serve ------------------------------------------------------------------------------

class Serve:
    def __init__(self, home: Path, workers: int, log: Path) -> None:
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.root = home / "ca" / "root.crt"
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        env.pop("TRUSTYARD_PASSWORD", None)
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "trustyard", "serve", "--home", str(home), "--listen",
                 f"127.0.0.1:{self.port}", "--workers", str(workers), "--log-level", "warning"],
                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"serve exited {self.process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with self.client() as c:
                    if c.get("/healthz").status_code == 200:
                        return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("serve did not become healthy")

    def client(self) -> httpx.Client:
        import ssl

        return httpx.Client(base_url=self.url, verify=ssl.create_default_context(cafile=str(self.root)), timeout=30)

    def cpu_seconds(self) -> float:
        """CPU time of serve and its workers so far (from /proc)."""
        total = 0.0
        tick = os.sysconf("SC_CLK_TCK")
        for pid in [self.process.pid, *_children(self.process.pid)]:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / tick
        return total

    def settle(self, limit: float = 120) -> float:
        """Wait until serve is idle (its CRL job has caught up): under 10% of a core for a second."""
        started = time.monotonic()
        while time.monotonic() - started < limit:
            before = self.cpu_seconds()
            time.sleep(1)
            if self.cpu_seconds() - before < 0.1:
                break
        return time.monotonic() - started

    def stop(self) -> None:
        ocsp_peer.stop(self.process)  # type: ignore[arg-type]


def _children(pid: int) -> list[int]:
    found = []
    for path in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(path.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if parent == pid:
            child = int(path.parent.name)
            found += [child, *_children(child)]
    return found


def revoke_latencies(led: ledgers.Ledger, serve: Serve, count: int) -> dict[str, float]:
    """Issue ``count`` certificates (in process), then revoke each through ``POST /v1/revoke``."""
    authority = led.authority
    prov = next(iter(authority.provisioners))
    key = generate_private_key(KeyType.EC_P256)
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
           .add_extension(x509.SubjectAlternativeName([parse_name("bench.internal")]), critical=False)
           .sign(key, hashes.SHA256()).public_bytes(Encoding.PEM))  # type: ignore[arg-type]
    serials = []
    for _ in range(count):
        token = authority.mint_token(prov, "bench.internal", ["bench.internal"])
        serials.append(authority.issue_for_token(csr, token).record.serial)
    admin = (led.home / "admin.token").read_text().strip()
    latencies = []
    with serve.client() as client:
        client.get("/healthz")
        for serial in serials:
            t = time.perf_counter()
            answer = client.post("/v1/revoke", json={"serial": serial, "reason": "keyCompromise"},
                                 headers={"authorization": f"Bearer {admin}"})
            latencies.append(time.perf_counter() - t)
            if answer.status_code != 200:
                raise RuntimeError(f"revoke answered {answer.status_code}: {answer.text}")
    latencies.sort()
    return {"revocations": count, "p50_ms": round(statistics.median(latencies) * 1000, 2),
            "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, 2),
            "max_ms": round(latencies[-1] * 1000, 2)}


# -- one size ----------------------------------------------------------------------------------

def measure_size(led: ledgers.Ledger, args: argparse.Namespace, work: Path, log: Path) -> dict[str, object]:
    shard, _count = ledgers.largest_shard(led)
    crl = ledgers.regenerate(led, shard)
    serve = Serve(led.home, args.workers, log)
    try:
        settled = serve.settle()
        revoke = revoke_latencies(led, serve, args.revocations)
    finally:
        serve.stop()
    return {"revoked_in_ledger": led.revoked, "largest_shard": crl, "revoke_api": revoke,
            "serve_settle_s": round(settled, 1)}


def measure_ocsp(led: ledgers.Ledger, args: argparse.Namespace, work: Path, log: Path) -> dict[str, object]:
    issuer = led.authority.material.signer.certificate
    good = led.good[: args.mix // 2]
    mix = [*good, *led.revoked_sample[: args.mix - len(good)]]
    serials = [c.serial for c in mix]
    sample = [{"serial": format(c.serial, "x"), "status": c.status,
               "revoked_at": c.revoked_at.replace(tzinfo=None).isoformat() if c.revoked_at else "",
               "reason": c.reason or ""} for c in [*mix[: args.check // 2], *mix[-(args.check // 2):]]]
    (work / "sample.json").write_text(json.dumps(sample))
    (work / "issuer.pem").write_bytes(issuer.public_bytes(Encoding.PEM))
    ocsp_peer.write_requests(work / "trustyard.req", serials, issuer, "/ocsp/")
    ocsp_peer.write_requests(work / "openssl.req", serials, issuer, "/")
    t = time.perf_counter()
    revoked = ledgers.all_revoked(led)
    ocsp_peer.write_index(work / "index.txt", revoked, [(c.serial, c.not_after) for c in led.good])
    index_s = time.perf_counter() - t
    files = ocsp_peer.responder_files(led.authority, work)
    result: dict[str, object] = {"mix": {"good": sum(c.status == "good" for c in mix),
                                         "revoked": sum(c.status == "revoked" for c in mix),
                                         "requests": 2 * len(mix), "methods": "POST and GET alternating"},
                                 "index_lines": len(revoked) + len(led.good), "index_write_s": round(index_s, 1),
                                 "connections": args.connections}
    serve = Serve(led.home, args.workers, log)
    try:
        serve.settle()
        result["trustyard_check"] = ocsp_peer.check(serve.url, "/ocsp/", "/ocsp", issuer, sample, serve.root)
        ocsp_peer.wrk(serve.url, work / "trustyard.req", "/ocsp", args.warmup, args.connections, 2)
        cpu0 = serve.cpu_seconds()
        figures = ocsp_peer.wrk(serve.url, work / "trustyard.req", "/ocsp", args.seconds, args.connections, 2)
        figures["server_cpu_ms_per_request"] = round(
            1000 * (serve.cpu_seconds() - cpu0) / max(1, figures["requests"]), 3)
        result["trustyard"] = figures
        with serve.client() as client:  # one real answer, for the ceiling
            fixed = client.post("/ocsp", content=ocsp_peer.request_der(serials[0], issuer),
                                headers={"content-type": "application/ocsp-request"}).content
    finally:
        serve.stop()
    if ceiling.available():
        port = free_port()
        front = ceiling.start(fixed, port, args.workers)
        try:
            for name, close in (("ceiling_keepalive", False), ("ceiling_per_connection", True)):
                cpu0 = _tree_cpu(front.pid)
                figures = ocsp_peer.wrk(f"http://127.0.0.1:{port}", work / "openssl.req", "/", args.seconds,
                                        args.connections, 2, close=close)
                figures["server_cpu_ms_per_request"] = round(
                    1000 * (_tree_cpu(front.pid) - cpu0) / max(1, figures["requests"]), 3)
                result[name] = figures
        finally:
            ceiling.stop(front)
    # openssl ocsp 3.0 busy-loops for good on a connection closed before its request (wrk
    # closes its fresh connections when its time is up), so every use gets a fresh start, and
    # it gets no warm-up (it has nothing to warm: it signs every answer, its index is loaded).
    ns = ocsp_peer.Namespace()
    try:
        for name, processes in (("openssl", 1), (f"openssl_multi{args.workers}", args.workers)):
            for step in ("load", "check") if processes == 1 else ("load",):
                port = free_port()
                peer = ocsp_peer.start_openssl(ns, work / "index.txt", files, port, processes, work / f"{name}.log",
                                               ocsp_peer.request_der(serials[0], issuer))
                try:
                    url = f"http://127.0.0.1:{port}"
                    if step == "check":
                        result["openssl_check"] = _check_in(ns, url, work)
                        continue
                    cpu0 = _tree_cpu(peer.pid)
                    figures = ocsp_peer.wrk(url, work / "openssl.req", "/", args.seconds, args.connections, 2, ns)
                    figures["server_cpu_ms_per_request"] = round(
                        1000 * (_tree_cpu(peer.pid) - cpu0) / max(1, figures["requests"]), 3)
                    result[name] = figures
                finally:
                    ocsp_peer.stop(peer, group=False)
    finally:
        ns.close()
    result["ratio"] = round(result["trustyard"]["rps"] / result["openssl"]["rps"], 2)  # type: ignore[index]
    result[f"ratio_vs_multi{args.workers}"] = round(
        result["trustyard"]["rps"] / result[f"openssl_multi{args.workers}"]["rps"], 2)  # type: ignore[index]
    if "ceiling_keepalive" in result:
        # the most any responder could reach over openssl on this machine, with this load generator
        result["ceiling_ratio"] = round(max(result["ceiling_keepalive"]["rps"],  # type: ignore[index]
                                            result["ceiling_per_connection"]["rps"])  # type: ignore[index]
                                        / result["openssl"]["rps"], 2)  # type: ignore[index]
    return result


def _check_in(ns: ocsp_peer.Namespace, url: str, work: Path) -> dict[str, object]:
    """``ocsp_peer.check`` against the openssl responder, run inside its namespace."""
    checked = subprocess.run(
        ns.wrap([sys.executable, str(Path(ocsp_peer.__file__)), "check", "--url", url, "--get-prefix", "/",
                 "--post-path", "/", "--issuer", str(work / "issuer.pem"), "--sample", str(work / "sample.json")]),
        capture_output=True, text=True, timeout=300)
    if checked.returncode != 0:
        raise RuntimeError(f"the openssl check failed: {checked.stderr[-2000:]}")
    return json.loads(checked.stdout)  # type: ignore[no-any-return]


def _tree_cpu(pid: int) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for p in [pid, *_children(pid)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


# -- the report -------------------------------------------------------------------------------

def table(result: dict) -> str:  # type: ignore[type-arg]
    small, large, o = result["small"], result["large"], result.get("ocsp")
    lines = [f"| figure | {small['revoked_in_ledger']:,} revoked | {large['revoked_in_ledger']:,} revoked | goal |",
             "|---|---:|---:|---|"]
    for label, key, goal in (("revoke API p50 ms", "p50_ms", ""), ("revoke API p99 ms", "p99_ms", "<= 50 ms, flat")):
        lines.append(f"| {label} | {small['revoke_api'][key]} | {large['revoke_api'][key]} | {goal} |")
    for label, key, goal in (("largest shard: entries", "entries", ""), ("largest shard: bytes", "bytes", ""),
                             ("largest shard: query s", "query_s", ""),
                             ("largest shard: regeneration s", "generate_s", "<= 2 s")):
        lines.append(f"| {label} | {small['largest_shard'][key]:,} | {large['largest_shard'][key]:,} | {goal} |")
    if o:
        lines += ["", f"OCSP, {o['connections']} connections, {o['mix']['requests']} distinct requests "
                      f"({o['mix']['good']} good + {o['mix']['revoked']} revoked serials, POST and GET):", "",
                  "| responder | transport | responses/s | p50 ms | p99 ms | errors | server CPU ms/response "
                  "| answers checked |",
                  "|---|---|---:|---:|---:|---:|---:|---|"]
        for name, transport, check in (("trustyard", "HTTPS, kept-alive", o["trustyard_check"]),
                                       ("openssl", "HTTP, a connection per request", o["openssl_check"]),
                                       (next(k for k in o if k.startswith("openssl_multi")),
                                        "HTTP, a connection per request", None),
                                       ("ceiling_keepalive", "HTTP, kept-alive", None),
                                       ("ceiling_per_connection", "HTTP, a connection per request", None)):
            if name not in o:
                continue
            f = o[name]
            checked = (f"{check['ok']}/{check['checked']} right" if check else
                       "(one fixed answer)" if name.startswith("ceiling") else "(same responder)")
            lines.append(f"| {name} | {transport} | {f['rps']:,.0f} | {f['p50_ms']:.2f} | {f['p99_ms']:.2f} | "
                         f"{int(f['errors'])} | {f['server_cpu_ms_per_request']} | {checked} |")
        multi = next(k for k in o if k.startswith("ratio_vs_multi"))
        lines += ["", f"**ratio trustyard / openssl ocsp: {o['ratio']}x** (goal >= 10x); "
                      f"against `-multi`: {o[multi]}x"]
        if "ceiling_ratio" in o:
            lines += [f"ceiling (nginx, one fixed answer, no lookup) / openssl ocsp: {o['ceiling_ratio']}x: "
                      "no responder that reads the request can exceed this ratio with this load generator on these cores"]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--revoked", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=1_000, help="the first size, measured in the same run")
    parser.add_argument("--good", type=int, default=1_000, help="issued (good) certificates in the ledger")
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--revocations", type=int, default=200, help="revocations timed per size")
    parser.add_argument("--mix", type=int, default=2_000, help="serials in the OCSP mix (half good)")
    parser.add_argument("--check", type=int, default=200, help="serials whose answers are checked, each side")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="serve --workers (and openssl -multi)")
    parser.add_argument("--db-url", default="")
    parser.add_argument("--no-ocsp", action="store_true", help="the ledger figures only")
    parser.add_argument("--quick", action="store_true", help="a small run (the smoke test's)")
    parser.add_argument("--json", action="store_true", help="print the JSON result only")
    args = parser.parse_args()
    if args.quick:
        args.revoked, args.small, args.good, args.revocations = 3_000, 500, 200, 20
        args.mix, args.check, args.seconds, args.warmup, args.shards = 200, 20, 1, 1, 4
    if not shutil.which("wrk") and not args.no_ocsp:
        raise SystemExit("bench/revoke needs wrk (apt-get install wrk)")
    work = Path(tempfile.mkdtemp(prefix="trustyard-revoke-bench-"))
    log = work / "serve.log"
    home = ledgers.make_home(work, args.shards, args.db_url)
    led = ledgers.open_ledger(home, args.shards)
    load = [os.getloadavg()]
    try:
        seconds = ledgers.add(led, args.small, args.good)
        small = measure_size(led, args, work, log)
        small["load_s"] = round(seconds, 1)
        seconds = ledgers.add(led, args.revoked - led.revoked, sample_every=max(1, args.revoked // args.mix))
        large = measure_size(led, args, work, log)
        large["load_s"] = round(seconds, 1)
        load.append(os.getloadavg())
        ocsp = None if args.no_ocsp else measure_ocsp(led, args, work, log)
        load.append(os.getloadavg())
    finally:
        led.close()
    errors = [line for line in log.read_text(errors="replace").splitlines()
              if "Traceback" in line or " ERROR" in line or "error" in line.lower()][:20]
    cpu = next((line.split(":", 1)[1].strip() for line in subprocess.run(["lscpu"], capture_output=True, text=True)
                .stdout.splitlines() if line.startswith("Model name")), platform.processor())
    result = {"small": small, "large": large, "ocsp": ocsp, "shards": args.shards,
              "database": "postgresql" if args.db_url else "sqlite", "workers": args.workers,
              "serve_log_errors": errors,
              "machine": {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
                          "openssl": subprocess.run(["openssl", "version"], capture_output=True,
                                                    text=True).stdout.strip(),
                          "loadavg": [" ".join(f"{x:.2f}" for x in la) for la in load],
                          "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}}
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / ("revoke-quick.json" if args.quick else "revoke.json")).write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps(result))
    else:
        print(table(result))
        m = result["machine"]
        print(f"\n{m['cpu']} x{m['cores']}, Python {m['python']}, {m['openssl']}, load {m['loadavg']}, {m['when']}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
