"""bench/acme/spy: where trustyard's server CPU per ACME order goes.

    python3 bench/acme/spy.py [--orders 300] [--workers 1] [--concurrency 16] [--py-spy FILE]

Runs ``run.py``'s load generator (the full order flow) against one ``trustyard serve`` and
prints its CPU per order (all processes, as ``run.py`` counts it). Unlike ``run.py`` it needs
no port 80 and no peer: pebble-challtestsrv listens on free ports and trustyard is pointed
there, so it can run beside other benchmarks. With ``--py-spy FILE`` (``pip install py-spy``)
the workers are sampled while the measured orders run; FILE gets the collapsed stacks and the
functions with the largest own and inclusive share are printed.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import run
import uvloop


def challtestsrv() -> tuple[subprocess.Popen[bytes], dict[str, int]]:
    ports = {"management": run.free_port(), "http": run.free_port(), "dns": run.free_port(),
             "tls": run.free_port()}
    process = subprocess.Popen(
        ["pebble-challtestsrv", "-management", f"127.0.0.1:{ports['management']}",
         "-http01", f"127.0.0.1:{ports['http']}", "-https01", "", "-tlsalpn01", f"127.0.0.1:{ports['tls']}",
         "-dns01", f"127.0.0.1:{ports['dns']}", "-defaultIPv6", ""],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run.wait_until(lambda: run.httpx.post(f"http://127.0.0.1:{ports['management']}/clear-txt",
                                          json={"host": "x.invalid."}, timeout=1))
    return process, ports


def report(collapsed: Path, top: int) -> None:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if not f.startswith("process ") and not f.startswith("thread ")]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    print(f"\n{total} samples; own time:")
    for frame, count in own.most_common(top):
        print(f"  {100 * count / total:5.1f}%  {frame}")
    print("inclusive:")
    for frame, count in inclusive.most_common(top * 2):
        print(f"  {100 * count / total:5.1f}%  {frame}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=300)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--poll-ms", type=int, default=25)
    parser.add_argument("--py-spy", type=Path, help="write py-spy's collapsed stacks here and summarize them")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    chall, ports = challtestsrv()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-acme-spy-") as tmp:
            process, url, verify = run.start_trustyard(Path(tmp), ports, args.workers)
            spy = None
            try:
                if args.py_spy:
                    spy = subprocess.Popen(["py-spy", "record", "--pid", str(process.pid), "--subprocesses",
                                            "--format", "raw", "--rate", "250", "--output", str(args.py_spy)],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    time.sleep(1)
                before, load = run.session_cpu_seconds(process.pid), os.getloadavg()[0]
                result = uvloop.run(run.drive(url, verify, f"http://127.0.0.1:{ports['management']}", args.orders,
                                              args.concurrency, args.poll_ms / 1000, "profile"))
                cpu = run.session_cpu_seconds(process.pid) - before
            finally:
                if spy is not None:
                    spy.send_signal(2)
                    spy.wait(30)
                run.stop(process)
    finally:
        run.stop(chall)
    orders = result["orders"] + result["errors"] + args.concurrency
    print(f"workers {args.workers}: {result['orders_per_s']} orders/s, p50 {result['p50_ms']} ms, "
          f"p99 {result['p99_ms']} ms, {result['requests_per_order']} requests/order, errors {result['errors']}, "
          f"server CPU {cpu * 1000 / orders:.2f} ms/order, load {load:.1f} -> {os.getloadavg()[0]:.1f}")
    if args.py_spy and args.py_spy.exists():
        report(args.py_spy, args.top)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    sys.exit(main())
