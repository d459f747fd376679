"""bench/soak: one `trustyard serve` under steady mixed load for a long time, watched for leaks.

    python3 bench/soak/run.py [--minutes 30] [--rate OPS_PER_S] [--clients 16] [--out bench/out/soak.json]

Starts `trustyard serve` (SQLite, its default worker count, a throwaway home) the way
bench/acme does, with pebble-challtestsrv answering http-01. Unless --rate is given, it first
measures the maximum rate of the mix (REST issuance, REST renewal, ACME order, in turn, from
--clients clients back to back for --measure-seconds), then runs the same mix open-loop at half
that rate for --minutes (load.py), while a probe samples every worker's RSS and the database
(probe.py). The goals, judged at the end:

- RSS of every worker grows <= 5% after warm-up: the median RSS of the window right after the
  warm-up window against the median of the last window;
- p99 latency of every operation in the last window <= 1.2x its p99 in the first window;
- the database grows only with certificates: bytes per new certificate in the second half of
  the run <= 1.2x the first half, and the tables of one-time things (nonces, unfinished
  orders, refusals, used tokens) stay flat once their retention has passed;
- 0 errors (failed operations, and ERROR lines in serve's log). A 503 with Retry-After (the CA
  shedding load) is sent again after that time, as trustyard.client does, and counted apart.

The window is 5 minutes for runs of 15 minutes or more and a fifth of the run for shorter ones;
the warm-up is the first window. Prints a table with pass/fail per goal and writes --out.
Exit status 0 when every goal passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "bench" / "acme")]  # the ACME load generator's connection.py

import uvloop  # noqa: E402
from load import KINDS, TOKEN_TTL, Load, Record, closed_loop, open_loop  # noqa: E402
from probe import Probe  # noqa: E402

_spec = importlib.util.spec_from_file_location("acme_bench", ROOT / "bench" / "acme" / "run.py")
assert _spec is not None and _spec.loader is not None
acme_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(acme_bench)  # reused: Account, one_order, challtestsrv, start_trustyard

RSS_GOAL, P99_GOAL, BYTES_GOAL = 0.05, 1.2, 1.2
FLAT_TOLERANCE = 1.1  # a bounded table may hold 10% more rows at the end (plus FLAT_SLACK)
FLAT_SLACK = 50


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


def window(seconds: float) -> float:
    return 300.0 if seconds >= 900 else seconds / 5


def in_range(samples: list[dict[str, Any]], start: float, end: float) -> list[dict[str, Any]]:
    return [s for s in samples if start <= s["t"] <= end]


# -- the goals ---------------------------------------------------------------------------------------

def latency(record: Record, seconds: float, w: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in (*KINDS, "all"):
        mine = [s for s in record.samples if s.latency is not None and kind in (s.kind, "all")]
        first = [s.latency for s in mine if s.due < w]
        last = [s.latency for s in mine if s.due >= seconds - w]
        p_first, p_last = percentile(first, 0.99), percentile(last, 0.99)  # type: ignore[arg-type]
        out[kind] = {"operations": len(mine), "first_p99_ms": _ms(p_first), "last_p99_ms": _ms(p_last),
                     "p50_ms": _ms(percentile([s.latency for s in mine], 0.5)),  # type: ignore[misc]
                     "ratio": round(p_last / p_first, 3) if p_first and p_last else None}
    return out


def timeline(record: Record, probe: Probe, seconds: float, buckets: int = 10) -> list[dict[str, Any]]:
    """Per tenth of the run: operations due, p50/p99 of all of them, the CPU ``serve`` spent per
    operation, and the cores the load generator and everything else on the machine used: a
    p99 that drifts while the server's CPU per operation stays put was the machine's doing."""
    out = []
    step = seconds / buckets
    for n in range(buckets):
        start, end = n * step, (n + 1) * step
        done = [s.latency for s in record.samples if start <= s.due < end and s.latency is not None]
        a = min(probe.samples, key=lambda x: abs(x["t"] - start))
        b = min(probe.samples, key=lambda x: abs(x["t"] - end))
        dt = b["t"] - a["t"]
        serve_s, own_s = b["serve_cpu_s"] - a["serve_cpu_s"], b["loadgen_cpu_s"] - a["loadgen_cpu_s"]
        busy_s = b["machine_busy_s"] - a["machine_busy_s"]
        out.append({"from_s": round(start), "to_s": round(end), "operations": len(done),
                    "p50_ms": _ms(percentile(done, 0.5)), "p99_ms": _ms(percentile(done, 0.99)),
                    "serve_cpu_ms_per_op": round(serve_s * 1000 / len(done), 2) if done else None,
                    "serve_cores": round(serve_s / dt, 2) if dt > 0 else None,
                    "loadgen_cores": round(own_s / dt, 2) if dt > 0 else None,
                    "other_cores": round((busy_s - serve_s - own_s) / dt, 2) if dt > 0 else None})
    return out


def rss(probe: Probe, seconds: float, w: float) -> dict[str, Any]:
    out = {}
    for pid, role in sorted(probe.roles.items()):
        series = [(s["t"], s["rss"][pid]) for s in probe.samples if pid in s["rss"]]
        after_warmup = [v for t, v in series if w <= t < 2 * w]
        last = [v for t, v in series if t >= seconds - w]
        if not after_warmup or not last:
            continue
        base, end = statistics.median(after_warmup), statistics.median(last)
        out[str(pid)] = {"role": role, "first_mib": _mib(series[0][1]), "after_warmup_mib": _mib(base),
                         "last_mib": _mib(end), "max_mib": _mib(max(v for _, v in series)),
                         "growth": round(end / base - 1, 4)}
    return out


def database(probe: Probe, seconds: float, w: float, purge_s: float) -> dict[str, Any]:
    from trustyard.ca.purge_job import REPLAY_MARGIN

    samples = [s for s in probe.samples if isinstance(s["db"], dict)]

    def at(t: float) -> dict[str, Any]:
        return min(samples, key=lambda s: abs(s["t"] - t))

    def size(s: dict[str, Any]) -> int:
        return int(s["db"]["page_count"]) * int(s["db"]["page_size"])

    def certs(s: dict[str, Any]) -> int:
        return int(s["db"]["rows"].get("certificates", 0))

    marks = [at(w), at((w + seconds) / 2), samples[-1]]
    halves = []
    for a, b in itertools.pairwise(marks):
        new = certs(b) - certs(a)
        halves.append({"certificates": new, "bytes": size(b) - size(a),
                       "bytes_per_certificate": round((size(b) - size(a)) / new) if new else None})
    first, second = halves[0]["bytes_per_certificate"], halves[1]["bytes_per_certificate"]
    # Tables of one-time things: flat once their retention has passed (0: flat from the start).
    retention = {"acme_nonces": 0.0, "refusals": 0.0, "acme_orders_unfinished": 0.0,
                 "used_tokens": TOKEN_TTL.total_seconds() + REPLAY_MARGIN.total_seconds() + purge_s}

    def rows(s: dict[str, Any], table: str) -> int:
        if table == "acme_orders_unfinished":
            return sum(n for status, n in s["db"].get("acme_orders_by_status", {}).items() if status != "valid")
        return int(s["db"]["rows"].get(table, 0))

    flat = {}
    for table, keep in retention.items():
        start = max(w, keep)
        reference = [rows(s, table) for s in in_range(samples, start, start + w)]
        last = [rows(s, table) for s in in_range(samples, seconds - w, seconds + 60)]
        judged = bool(reference) and seconds - w >= start + w
        limit = max(reference) * FLAT_TOLERANCE + FLAT_SLACK if reference else None
        flat[table] = {"retention_s": keep, "reference_max": max(reference) if reference else None,
                       "last_max": max(last) if last else None, "judged": judged,
                       "ok": (max(last) <= limit) if judged and last and limit is not None else None}
    end = samples[-1]["db"]
    return {"halves": halves, "ratio": round(second / first, 3) if first and second else None, "flat": flat,
            "end": {"bytes": size(samples[-1]), "file_bytes": end["file_bytes"], "wal_bytes": end["wal_bytes"],
                    "free_pages": end["freelist_count"], "rows": end["rows"],
                    "acme_orders_by_status": end.get("acme_orders_by_status", {})},
            "start_rows": samples[0]["db"]["rows"]}


def _ms(seconds: float | None) -> float | None:
    return round(seconds * 1000, 1) if seconds is not None else None


def _mib(value: float) -> float:
    return round(value / 2**20, 1)


# -- the run -------------------------------------------------------------------------------------

def ensure_challtestsrv() -> None:
    """pebble-challtestsrv only (bench/acme's ``ensure_tools`` also builds its peers), listening
    for http-01 on a free port: trustyard validates on any (TRUSTYARD_ACME_HTTP_PORT), so the
    soak needs neither root nor port 80 (which bench/acme's step-ca needs) and can run beside it."""
    if not shutil.which("pebble-challtestsrv"):
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "pebble"], check=True, stdout=subprocess.DEVNULL)
    acme_bench.HTTP01_PORT = acme_bench.free_port()  # read by start_challtestsrv where it is port 80


def load_average() -> str:
    return " / ".join(Path("/proc/loadavg").read_text().split()[:3])


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


async def drive(args: argparse.Namespace, origin: str, root: str, directory_url: str, challtest_url: str,
                provisioner_key: Any, serve_pid: int, db: Path) -> dict[str, Any]:
    load = Load(acme_bench, origin, root, directory_url, challtest_url, provisioner_key, args.clients,
                args.poll_ms / 1000)
    try:
        await load.open()
        measured: dict[str, Any] = {}
        rate = args.rate
        if rate is None:
            maximum, record = await closed_loop(load, args.measure_seconds, warmup=3)
            failed = [s for s in record.samples if s.latency is None]
            measured = {"max_ops_per_s": round(maximum, 2), "seconds": args.measure_seconds,
                        "errors": len(failed), "error_samples": [s.error for s in failed[:3]]}
            rate = maximum / 2
            measured["retried_after_503"] = dict(load.retried)
            load.retried.clear()
            print(f"maximum: {maximum:.1f} operations/s ({args.clients} clients back to back, "
                  f"{args.measure_seconds} s); soaking at {rate:.1f}/s for {args.minutes} min", flush=True)
        seconds = args.minutes * 60
        probe = Probe(serve_pid, db, args.sample_seconds or min(5.0, max(0.5, seconds / 60))).start()
        next_report = [0.0]

        def progress(t: float) -> None:
            if t >= next_report[0]:
                next_report[0] = t + max(30.0, seconds / 20)
                last = probe.samples[-1]
                workers = [v for pid, v in last["rss"].items() if probe.roles.get(pid) == "worker"]
                rows = last["db"]["rows"].get("certificates") if isinstance(last["db"], dict) else "?"
                print(f"  {t:6.0f} s  certificates {rows}  worker RSS "
                      f"{', '.join(f'{_mib(v)}' for v in workers)} MiB  load {load_average()}", flush=True)

        record = await open_loop(load, rate, seconds, progress)
        probe.stop()
    finally:
        load.close()
    return {"rate": rate, "measured": measured, "record": record, "probe": probe, "seconds": seconds,
            "retried": dict(load.retried)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="length of the soak (default 30)")
    parser.add_argument("--rate", type=float, default=None,
                        help="operations/s to soak at (default: half the measured maximum)")
    parser.add_argument("--measure-seconds", type=float, default=20.0, help="length of the maximum-rate run")
    parser.add_argument("--clients", type=int, default=16, help="REST connections and ACME accounts")
    parser.add_argument("--poll-ms", type=int, default=25, help="ACME clients' sleep between polls")
    parser.add_argument("--workers", type=int, default=0, help="serve's workers (default: its own, one per core)")
    parser.add_argument("--sample-seconds", type=float, default=0.0, help="probe interval (default 5 s, less for "
                                                                          "short runs)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "soak.json")
    args = parser.parse_args()
    ensure_challtestsrv()
    from trustyard.ca.config import load_config
    from trustyard.ca.home import load_key

    workers = args.workers or os.cpu_count() or 1  # what `serve` picks when trustyard.toml says 0
    started_at, load_before = datetime.now(UTC), load_average()
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp_text:
        tmp = Path(tmp_text)
        challtest, ports = acme_bench.start_challtestsrv()
        try:
            serve, directory_url, root = acme_bench.start_trustyard(tmp, ports, workers)
            try:
                home = tmp / "trustyard"
                config = load_config(home)
                key = load_key(config, "provisioners/default.key", acme_bench.PASSWORD.encode())
                origin = directory_url.split("/acme/", 1)[0]
                result = uvloop.run(drive(args, origin, root, directory_url,
                                          f"http://127.0.0.1:{ports['management']}", key, serve.pid,
                                          home / "trustyard.db"))
            finally:
                acme_bench.stop(serve)
            log_errors = [line for line in (tmp / "trustyard.log").read_text(errors="replace").splitlines()
                          if " ERROR " in line or line.startswith("Traceback")]
        finally:
            acme_bench.stop(challtest)
    record, probe, seconds = result["record"], result["probe"], result["seconds"]
    w = window(seconds)
    failed = [s for s in record.samples if s.latency is None]
    doc: dict[str, Any] = {
        "benchmark": "soak: REST issuance, REST renewal and ACME orders in turn, open loop, one serve (SQLite)",
        "command": " ".join(["python3", "bench/soak/run.py", *sys.argv[1:]]),
        "minutes": args.minutes, "window_s": w, "warmup_s": w, "workers": workers, "clients": args.clients,
        "rate_ops_per_s": round(result["rate"], 2), "max_rate": result["measured"],
        "operations": len(record.samples),
        "errors": {"operations": len(failed), "by_kind": {k: sum(s.kind == k for s in failed) for k in KINDS},
                   "retried_after_503": result["retried"],
                   "samples": [s.error for s in failed[:5]], "serve_log": log_errors[:5],
                   "serve_log_count": len(log_errors)},
        "latency": latency(record, seconds, w),
        "timeline": timeline(record, probe, seconds),
        "rss": rss(probe, seconds, w),
        "database": database(probe, seconds, w, config.acme.purge_seconds),
        "machine": {"cpu": cpu_model(), "cpus": os.cpu_count(), "load_average_before": load_before,
                    "load_average_after": load_average(), "python": platform.python_version()},
        "at": started_at.isoformat(timespec="seconds"),
        "samples": [{"t": s["t"], "rss": {str(p): v for p, v in s["rss"].items()},
                     "db": s["db"] if not isinstance(s["db"], dict) else
                     {k: v for k, v in s["db"].items() if k != "rows"} | {"rows": s["db"]["rows"]}}
                    for s in probe.samples],
    }
    goals = judge(doc)
    doc["goals"] = goals
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    report(doc)
    try:
        shown = args.out.resolve().relative_to(ROOT)
    except ValueError:
        shown = args.out
    print(f"-> {shown}")
    return 0 if all(g["ok"] for g in goals) else 1


def judge(doc: dict[str, Any]) -> list[dict[str, Any]]:
    workers = {pid: r for pid, r in doc["rss"].items() if r["role"] == "worker"}
    worst = max((r["growth"] for r in workers.values()), default=None)
    ratios = {k: doc["latency"][k]["ratio"] for k in KINDS}
    worst_p99 = max((r for r in ratios.values() if r is not None), default=None)
    db = doc["database"]
    unflat = [t for t, f in db["flat"].items() if f["judged"] and not f["ok"]]
    errors = doc["errors"]["operations"] + doc["errors"]["serve_log_count"]
    return [
        {"goal": "RSS growth of every worker after warm-up", "target": f"<= {RSS_GOAL:.0%}",
         "measured": ", ".join(f"{r['growth']:+.1%}" for r in workers.values()) or "no worker sampled",
         "ok": worst is not None and worst <= RSS_GOAL},
        {"goal": "p99 last window / first window", "target": f"<= {P99_GOAL}x",
         "measured": ", ".join(f"{k} {v}x" for k, v in ratios.items()),
         "ok": worst_p99 is not None and all(r is not None and r <= P99_GOAL for r in ratios.values())},
        {"goal": "database bytes per certificate, 2nd half / 1st half", "target": f"<= {BYTES_GOAL}x",
         "measured": f"{db['ratio']}x ({db['halves'][0]['bytes_per_certificate']} -> "
                     f"{db['halves'][1]['bytes_per_certificate']} B)",
         "ok": db["ratio"] is not None and db["ratio"] <= BYTES_GOAL},
        {"goal": "tables of one-time things flat", "target": "last <= 1.1x reference + 50",
         "measured": ", ".join(f"{t} {f['reference_max']}->{f['last_max']}" + ("" if f["judged"] else " (not judged: "
                                                                               "retention longer than the run)")
                               for t, f in db["flat"].items()),
         "ok": not unflat},
        {"goal": "errors", "target": "0", "measured": f"{doc['errors']['operations']} operations, "
                                                      f"{doc['errors']['serve_log_count']} serve log lines "
                                                      f"({sum(doc['errors']['retried_after_503'].values())} "
                                                      "sent again after a 503)",
         "ok": errors == 0},
    ]


def report(doc: dict[str, Any]) -> None:
    m = doc["machine"]
    print()
    print(f"machine: {m['cpu']}, {m['cpus']} CPUs, load average {m['load_average_before']} before, "
          f"{m['load_average_after']} after (a shared machine)")
    maximum = doc["max_rate"].get("max_ops_per_s")
    print(f"soak: {doc['minutes']} min at {doc['rate_ops_per_s']} operations/s"
          + (f" (half the measured {maximum}/s)" if maximum else " (--rate)")
          + f", {doc['operations']} operations, serve with {doc['workers']} workers, window {doc['window_s']:.0f} s")
    print()
    print(f"{'operation':<10} {'count':>7} {'p50 ms':>8} {'p99 first':>10} {'p99 last':>9} {'ratio':>6}")
    for kind in (*KINDS, "all"):
        r = doc["latency"][kind]
        print(f"{kind:<10} {r['operations']:>7} {r['p50_ms']!s:>8} {r['first_p99_ms']!s:>10} "
              f"{r['last_p99_ms']!s:>9} {r['ratio']!s:>6}")
    print()
    print(f"{'from s':>7} {'to s':>6} {'ops':>6} {'p50 ms':>7} {'p99 ms':>7} {'serve CPU ms/op':>15} "
          f"{'serve cores':>11} {'load gen cores':>14} {'other cores':>11}")
    for r in doc["timeline"]:
        print(f"{r['from_s']:>7} {r['to_s']:>6} {r['operations']:>6} {r['p50_ms']!s:>7} {r['p99_ms']!s:>7} "
              f"{r['serve_cpu_ms_per_op']!s:>15} {r['serve_cores']!s:>11} {r['loadgen_cores']!s:>14} "
              f"{r['other_cores']!s:>11}")
    print()
    print(f"{'process':<18} {'first MiB':>9} {'after warm-up':>13} {'last MiB':>9} {'max MiB':>8} {'growth':>7}")
    for pid, r in doc["rss"].items():
        print(f"{r['role'] + ' ' + pid:<18} {r['first_mib']:>9} {r['after_warmup_mib']:>13} {r['last_mib']:>9} "
              f"{r['max_mib']:>8} {r['growth']:>+7.1%}")
    db = doc["database"]
    print()
    for name, half in zip(("1st half", "2nd half"), db["halves"]):
        print(f"database {name}: +{half['certificates']} certificates, +{half['bytes']} bytes, "
              f"{half['bytes_per_certificate']} B/certificate")
    print(f"database at the end: {db['end']['bytes']} bytes ({db['end']['free_pages']} free pages), rows "
          + ", ".join(f"{t} {n}" for t, n in sorted(db["end"]["rows"].items()) if n))
    print()
    print(f"{'goal':<52} {'target':<28} {'':<5} measured")
    for g in doc["goals"]:
        print(f"{g['goal']:<52} {g['target']:<28} {'PASS' if g['ok'] else 'FAIL':<5} {g['measured']}")


if __name__ == "__main__":
    sys.exit(main())
