"""bench/rotate: a fleet of agents through an intermediate rotation, against a real CA.

    python3 bench/rotate/run.py [--agents 2000] [--interval 30s] [--workers 2] [--threads 16]
                                [--database-url postgresql+psycopg://...] [--quick] [--json]

Starts a throwaway CA (`trustyard init`, `trustyard serve` on loopback; SQLite unless
--database-url) and, in this one process, N agents: each is the agent's own ``Agent`` and
``ManagedCert`` (bootstrap with a one-time token over /v1/sign, check-ins with the proof the
agent signs, the interval's +-10% jitter, directives obeyed by the agent's code: refresh-bundle,
renew-now, retry-after), driven by ``Agent.tick`` from a pool of threads over one HTTPS client.
Only the files are in memory. The trust bundle is polled at the check-in interval (the agent's
defaults are 1m and 60s: the same ratio), so every request rate scales with the interval.

Then it rotates the intermediate with the real CLI (`trustyard rotate intermediate`, `rotate
advance` whenever `rotate status --json` says the gate is open) and measures
- published -> 100% adoption: the last agent's check-in reporting the new bundle version
  (goal: two check-in intervals plus the dwell);
- the CA's CPU (the `serve` process tree, from /proc) during steady check-ins, as % of one core,
  scaled from the run's interval to 60 s (goal: under 10% for 2,000 agents at 60 s);
- active -> the last leaf re-issued on the new intermediate (every agent renewed; each leaf
  verified as signed by the new intermediate), with the renew-now window beside it;
- failed requests (goal 0; each one printed).

There is no peer to run the same fleet against (SPIRE is not installable here): the goals are
printed beside the figures instead of a ratio. Writes bench/out/rotate.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from cryptography import x509  # noqa: E402
from cryptography.exceptions import InvalidSignature  # noqa: E402
from fleetsim import (  # noqa: E402
    PASSWORD,
    CountingBackend,
    Fleet,
    MemoryOutput,
    Stats,
    cli,
    machine,
    start_serve,
    stop_serve,
    tree_cpu_seconds,
    until,
    wait_healthy,
)

from trustyard.agent.config import AgentConfig, cert_spec  # noqa: E402
from trustyard.agent.runner import Agent, ManagedCert  # noqa: E402
from trustyard.agent.seams import HTTPBackend, SystemClock  # noqa: E402
from trustyard.units import format_duration, parse_duration  # noqa: E402


class RotateStats(Stats):
    """When each agent reported the wanted bundle version and got a leaf of the new intermediate."""

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.wanted_version: int | None = None
        self.adopted_at: list[float | None] = [None] * n  # reported the wanted bundle version
        self.new_issuer: x509.Certificate | None = None
        self.renewed_at: list[float | None] = [None] * n  # holds a leaf of the new intermediate

    def renewed(self, index: int, leaf: x509.Certificate) -> None:
        new = self.new_issuer
        if new is not None and self.renewed_at[index] is None:
            try:
                leaf.verify_directly_issued_by(new)
                self.renewed_at[index] = time.time()
            except (ValueError, TypeError, InvalidSignature):
                pass

    def checked_in(self, index: int, version: int | None, answer: dict[str, Any]) -> None:
        wanted = self.wanted_version
        if wanted is not None and version is not None and version >= wanted and self.adopted_at[index] is None:
            self.adopted_at[index] = time.time()


# -- the run ------------------------------------------------------------------------------------

def run(args: argparse.Namespace) -> dict[str, Any]:
    from trustyard.ca.home import load_authority
    from trustyard.testing import free_port

    interval = parse_duration(args.interval).total_seconds()
    dwell = parse_duration(args.dwell).total_seconds() if args.dwell else 2 * interval
    window = parse_duration(args.renew_window).total_seconds() if args.renew_window else interval
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    work = Path(tempfile.mkdtemp(prefix="bench-rotate-", dir=base))
    home, port = work / "home", free_port()
    url = f"https://127.0.0.1:{port}"
    init = ["init", "--allow", "*.bench.internal", "--listen", f"127.0.0.1:{port}"]
    cli(home, *init, *(["--database-url", args.database_url] if args.database_url else []))
    with (home / "trustyard.toml").open("a") as toml:
        toml.write(f'\n[rotation]\ncheckin_interval = "{format_duration(timedelta(seconds=interval))}"\n'
                   f'dwell = "{format_duration(timedelta(seconds=dwell))}"\n'
                   f'renew_window = "{format_duration(timedelta(seconds=window))}"\npoll_interval = "1s"\n')
    root = home / "ca" / "root.crt"
    log = work / "serve.log"
    serve = start_serve(home, args.workers, log)
    fleet: Fleet | None = None
    http: HTTPBackend | None = None
    try:
        wait_healthy(url, root, serve, log)
        time.sleep(min(args.idle, 3))  # the workers' start-up tail is no idle cost
        idle0, it0 = tree_cpu_seconds(serve.pid), time.time()
        time.sleep(args.idle)  # what serve costs with nobody talking to it (its pollers)
        idle_percent = 100 * (tree_cpu_seconds(serve.pid) - idle0) / (time.time() - it0)
        authority = load_authority(home, PASSWORD.encode(), minting=True)
        names = [f"a{i}.bench.internal" for i in range(args.agents)]
        tokens = [authority.mint_token("default", n, [n], ttl=timedelta(hours=2)) for n in names]
        authority.store.close()

        stats = RotateStats(args.agents)
        http = HTTPBackend(url, root, timeout=30)
        clock, agents = SystemClock(), []
        rng = random.Random(args.seed)
        for i, name in enumerate(names):
            out = MemoryOutput(name)
            backend = CountingBackend(http, stats, i, out)
            spec = cert_spec({"name": name, "out": f"/nonexistent/{name}", "ttl": "24h"})
            m = ManagedCert(spec, backend, out, clock, rng=random.Random(rng.random()),
                            environ={"TRUSTYARD_TOKEN": tokens[i]})
            every = timedelta(seconds=interval)
            config = AgentConfig(ca_url=url, root=root, certificates=(spec,), roots_interval=every,
                                 checkin_interval=every)
            agent = Agent(config, backend, [m], clock, rng=random.Random(rng.random()))
            agent.start()
            agents.append(agent)
        phases: dict[str, float] = {}
        fleet = Fleet(agents, stats, args.threads, ramp=interval)
        phases["start"] = time.time()
        fleet.start()
        until(lambda: stats.requests["checkin"] >= args.agents and all(a.managed[0].current for a in agents),
              interval * 4 + 60, "every agent to bootstrap and check in")
        time.sleep(interval / 2)  # past the ramp: check-ins at their own rhythm

        # steady state: the CA's CPU over whole intervals of check-ins
        cpu0, t0, c0 = tree_cpu_seconds(serve.pid), time.time(), dict(stats.requests)
        lag0 = len(stats.lag)
        time.sleep(args.steady * interval)
        cpu1, t1, c1 = tree_cpu_seconds(serve.pid), time.time(), dict(stats.requests)
        steady_lag = sorted(stats.lag[lag0:])
        wall, cpu = t1 - t0, cpu1 - cpu0
        checkins = c1["checkin"] - c0["checkin"]
        steady = {
            "seconds": round(wall, 1), "ca_cpu_seconds": round(cpu, 2), "checkins": checkins,
            "requests": {k: c1[k] - c0[k] for k in c1}, "checkins_per_second": round(checkins / wall, 1),
            "ca_core_percent_at_interval": round(100 * cpu / wall, 1),
            "ca_idle_core_percent": round(idle_percent, 2),
            # the requests' share scales with the rate (interval / 60 s); the idle pollers' does not
            "ca_core_percent_at_60s": round(idle_percent + (100 * cpu / wall - idle_percent) * interval / 60, 2),
            "ca_cpu_ms_per_checkin": round(1000 * cpu / checkins, 2) if checkins else None,
            "tick_lag_p99_s": round(steady_lag[int(0.99 * (len(steady_lag) - 1))], 3) if steady_lag else None,
        }

        # the rotation, by the CLI
        cli(home, "rotate", "intermediate", "--reason", "bench")
        stats.new_issuer = x509.load_pem_x509_certificate((home / "ca/rotations/1/intermediate.crt").read_bytes())
        published = json.loads(cli(home, "rotate", "advance", "--reason", "bench", "--json").stdout)
        phases["published"] = time.time()
        stats.wanted_version = published["bundle_version"]
        cpu_pub = tree_cpu_seconds(serve.pid)
        try:
            until(lambda: all(t is not None for t in stats.adopted_at), 2 * interval + dwell + 120, "adoption")
        except RuntimeError:
            laggards = [i for i, t in enumerate(stats.adopted_at) if t is None]
            for i in laggards[:10]:
                a, m = agents[i], agents[i].managed[0]
                print(f"laggard {i}: bundle {m.output.bundle_version()[0]} next check-in {a.checkin_next} hold "
                      f"{a.checkin_hold} roots_next {a.roots_next} failures {m.failures} {m.last_error} "
                      f"in heap {any(j == i for _, j in fleet.heap)}", file=sys.stderr)
            print(f"{len(laggards)} laggards; failures {stats.failures[:5]}; now {datetime.now(UTC)}", file=sys.stderr)
            raise
        phases["adopted_100"] = max(t for t in stats.adopted_at if t is not None)
        coverage = ""

        def gate_open() -> bool:
            nonlocal coverage
            status = json.loads(cli(home, "rotate", "status", "--json").stdout)
            coverage = json.dumps(status.get("gate", status))[:300]
            return cli(home, "rotate", "advance", "--reason", "bench", check=False).returncode == 0

        until(gate_open, dwell + 120, "the adoption gate", step=1)
        phases["adopted"] = time.time()
        cli(home, "rotate", "advance", "--reason", "bench")  # active
        phases["active"] = time.time()
        until(lambda: all(t is not None for t in stats.renewed_at), window + 2 * interval + 120,
              "every leaf renewed on the new intermediate")
        phases["renewed_100"] = max(t for t in stats.renewed_at if t is not None)
        renewed = sorted(t - phases["active"] for t in stats.renewed_at if t is not None)
        until(lambda: cli(home, "rotate", "advance", "--reason", "bench", check=False).returncode == 0,
              window + 60, "retiring", step=1)
        until(lambda: cli(home, "rotate", "advance", "--reason", "bench", check=False).returncode == 0,
              interval + 60, "retired", step=1)
        phases["retired"] = time.time()
        cpu_rot = tree_cpu_seconds(serve.pid) - cpu_pub
        time.sleep(min(interval, 5))  # check-ins after retiring still answered without failure
    finally:
        if fleet is not None:
            fleet.stop()
        if http is not None:
            http.close()
        stop_serve(serve)
    errors_logged = [line for line in log.read_text().splitlines() if "Traceback" in line or " ERROR " in line]
    holders = {a.managed[0].output.leaf.issuer.rfc4514_string() for a in agents if a.managed[0].output.leaf}
    return {
        "agents": args.agents, "interval_s": interval, "dwell_s": dwell, "renew_window_s": window,
        "workers": args.workers, "threads": args.threads, "database": args.database_url or "sqlite",
        "steady": steady, "requests": stats.requests, "directives": stats.directives,
        "published_to_100pct_adoption_s": round(phases["adopted_100"] - phases["published"], 1),
        "adoption_goal_s": 2 * interval + dwell,
        "published_to_adopted_state_s": round(phases["adopted"] - phases["published"], 1),
        "active_to_last_leaf_renewed_s": round(phases["renewed_100"] - phases["active"], 1),
        "active_to_last_leaf_expected_s": window + interval * 1.1,
        "active_to_leaf_renewed_p50_p90_s": [round(renewed[len(renewed) // 2], 1),
                                             round(renewed[int(0.9 * (len(renewed) - 1))], 1)],
        "rotation_ca_cpu_seconds": round(cpu_rot, 1),
        "rotation_wall_s": round(phases["retired"] - phases["published"], 1),
        "leaf_issuers_at_end": sorted(holders),
        "leaves_on_new_intermediate": sum(t is not None for t in stats.renewed_at), "last_gate": coverage,
        "failed_requests": len(stats.failures), "failures": stats.failures[:50],
        "serve_log_errors": errors_logged[:20],
        "total_wall_s": round(time.time() - phases["start"], 1),
    }


def table(r: dict[str, Any]) -> str:
    s = r["steady"]
    rows = [
        ("agents (one process, real HTTPS)", f"{r['agents']} at a {r['interval_s']:g} s interval", ""),
        ("check-ins/s during the steady state", f"{s['checkins_per_second']}", ""),
        ("CA CPU, % of one core, at the run's interval", f"{s['ca_core_percent_at_interval']}%", ""),
        ("CA CPU, % of one core, idle (no agents)", f"{s['ca_idle_core_percent']}%", ""),
        ("CA CPU, % of one core, scaled to 60 s", f"{s['ca_core_percent_at_60s']}%", "< 10%"),
        ("CA CPU per check-in (all requests / check-ins)", f"{s['ca_cpu_ms_per_checkin']} ms", ""),
        ("published -> 100% adoption", f"{r['published_to_100pct_adoption_s']} s",
         f"<= {r['adoption_goal_s']:g} s (2 intervals + dwell)"),
        ("published -> adopted (the gate, dwell included)", f"{r['published_to_adopted_state_s']} s",
         f">= dwell {r['dwell_s']:g} s"),
        ("active -> last leaf on the new intermediate", f"{r['active_to_last_leaf_renewed_s']} s",
         f"~ renew window {r['renew_window_s']:g} s + 1 interval"),
        ("  (p50, p90 of the leaves)", ", ".join(f"{x} s" for x in r["active_to_leaf_renewed_p50_p90_s"]), ""),
        ("failed requests", str(r["failed_requests"]), "0"),
        ("requests (all phases)", ", ".join(f"{k} {v}" for k, v in r["requests"].items()), ""),
        ("bench tick lag p99 (steady)", f"{s['tick_lag_p99_s']} s", "small vs the interval"),
    ]
    width = max(len(a) for a, _, _ in rows)
    lines = [f"{'':{width}}  {'figure':<28} goal", *(f"{a:{width}}  {b:<28} {c}" for a, b, c in rows)]
    lines.append("No peer runs this (SPIRE is not installable here): goals are printed, not ratios.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=2000)
    parser.add_argument("--idle", type=float, default=10, help="seconds to measure serve's idle CPU over")
    parser.add_argument("--interval", default="30s", help="check-in interval (the CPU figure is scaled to 60s)")
    parser.add_argument("--dwell", default="", help="[rotation] dwell [default: two intervals]")
    parser.add_argument("--renew-window", default="", help="[rotation] renew_window [default: one interval]")
    parser.add_argument("--steady", type=float, default=3, help="intervals of steady check-ins to measure CPU over")
    parser.add_argument("--workers", type=int, default=2, help="serve worker processes")
    parser.add_argument("--threads", type=int, default=16, help="threads ticking the agents")
    parser.add_argument("--database-url", default="", help="SQLAlchemy URL of an empty PostgreSQL database")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 20 agents, 2 s interval")
    parser.add_argument("--json", action="store_true", help="print the JSON document instead of the table")
    args = parser.parse_args(argv)
    if args.quick:
        args.agents, args.interval, args.steady, args.idle = min(args.agents, 20), "2s", 2, 2
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    result = {"machine": machine(), **run(args)}
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "rotate.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2) if args.json else
          f"{result['machine']['cpu']} x{result['machine']['cores']}, load {result['machine']['loadavg']}\n"
          + table(result))
    for failure in result["failures"]:
        print("FAILED:", failure, file=sys.stderr)
    ok = result["failed_requests"] == 0 and result["published_to_100pct_adoption_s"] <= result["adoption_goal_s"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
