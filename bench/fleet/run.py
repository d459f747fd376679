"""bench/fleet: a fleet of agents through an emergency re-issue and through a CA outage.

    python3 bench/fleet/run.py [--agents 5000] [--interval 30s] [--time-scale 60] [--phase both]
                               [--workers 2] [--threads 16] [--quick] [--json]

One real ``trustyard serve`` on loopback (SQLite) and, in this one process, N of the agent's own
``Agent``/``ManagedCert`` over HTTPS (bench/fleetsim.py: real keys, bootstrap tokens, check-in
proofs with the agent's report, renewals with a new key, directives obeyed by the agent's code,
its schedule and backoff). Each agent's simulated service serves a certificate the moment it is
written; the agent's own verify-endpoint probe reads it, so each check-in reports it as
``endpoint_serial``. Check-ins every --interval (+-10%, the agent's jitter): the time to replace
a certificate through the check-in channel is bounded below by it.

Phase 1, emergency (real time): 24 h certificates; then ``trustyard emergency --all`` (on a
branch without that command: ``Fleet.request_renewal`` of every party, the same channel, and no
revocation). Measured from the command's start: each agent's replacement written and served
(99% goal 60 s, 100% goal 5 min), the CA told so by a check-in reporting it, the CA's own
``emergency status --json`` counts, and every old certificate revoked.

Phase 2, outage (scaled by --time-scale S): new agents with 1 h / S certificates, started over
one lifetime so their renewal points spread; after one more lifetime the serve process group is
SIGKILLed (a crash: connection refused until it is back), started again 15 min / S later, and
the run goes on for two lifetimes. The agents' backoff is the agent's ``Backoff`` with its
durations divided by S. Measured: certificates that expired in service (goal 0); for each agent
whose renewal point passed while the CA was down, CA answering again (/healthz 200) -> its
renewal written (goal: max <= 2 min; printed with the scaled 2 min / S beside it); every failed
request by kind and window; 503 answers with and without Retry-After; the latency of the
recovery burst (CA answering again -> the last overdue renewal) at the client and in serve's own
histogram (/metrics, bucket bounds).

Prints a table, writes bench/out/fleet.json; exit status 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import random
import re
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import httpx  # noqa: E402
from fleetsim import (  # noqa: E402
    PASSWORD,
    SERVICE,
    CountingBackend,
    Fleet,
    MemoryOutput,
    Stats,
    cli,
    machine,
    managed_cert,
    percentile,
    start_serve,
    stop_serve,
    tree_cpu_seconds,
    until,
    wait_healthy,
)
from report import ok, table  # noqa: E402

from trustyard.agent.config import AgentConfig, cert_spec  # noqa: E402
from trustyard.agent.runner import Agent  # noqa: E402
from trustyard.agent.schedule import Backoff  # noqa: E402
from trustyard.agent.seams import HTTPBackend, SystemClock  # noqa: E402
from trustyard.client import CAUnavailable  # noqa: E402
from trustyard.units import format_duration, parse_duration  # noqa: E402
from trustyard.x509.summary import serial_text  # noqa: E402

_STATUS = re.compile(r"the CA answered (\d{3})")


class FleetStats(Stats):
    """Per agent: its certificate before the emergency, when a replacement was written, when a
    check-in told the CA; every request's timing; every failure classified."""

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.old: list[int | None] = [None] * n
        self.replaced_at: list[float | None] = [None] * n
        self.reported_at: list[float | None] = [None] * n
        self.checked: list[int] = [0] * n
        self.outputs: list[MemoryOutput] = []
        self.timings: list[tuple[str, float, float]] = []  # (kind, started, ended), answered requests
        self.failed_at: list[tuple[str, float, str]] = []  # (kind, failed at, reason)
        self.responses: Counter[str] = Counter()  # "path status retry-after?" of every answer >= 400

    def failed(self, what: str, exc: BaseException, kind: str = "", index: int = -1, started: float = 0.0) -> None:
        super().failed(what, exc, kind, index, started)
        detail = str(getattr(exc, "detail", exc))
        status = _STATUS.search(detail)
        if status:
            reason = f"HTTP {status.group(1)}"
        elif isinstance(exc, CAUnavailable):
            reason = "connection refused" if "refused" in detail.lower() else \
                ("connection broken/timeout" if exc.maybe_delivered else f"unreachable: {detail[:60]}")
        else:
            reason = f"{getattr(exc, 'status', '?')} {getattr(exc, 'code', type(exc).__name__)}"
        with self.lock:
            self.failed_at.append((kind, time.time(), reason))  # when it failed: a kill breaks requests in flight

    def done(self, kind: str, index: int, started: float, ended: float) -> None:
        with self.lock:
            self.timings.append((kind, started, ended))

    def written(self, out: MemoryOutput) -> None:
        i = int(out.name)
        if self.old[i] is not None and self.replaced_at[i] is None and out.leaf is not None \
                and out.leaf.serial_number != self.old[i]:
            self.replaced_at[i] = time.time()

    def checked_in(self, index: int, version: int | None, answer: dict[str, Any]) -> None:
        self.checked[index] += 1
        if self.replaced_at[index] is not None and self.reported_at[index] is None:
            self.reported_at[index] = time.time()  # the report carried the replacement's serial

    def response(self, response: httpx.Response) -> None:
        if response.status_code >= 400:
            retry = "" if response.status_code not in (429, 503) else \
                (" with Retry-After" if response.headers.get("retry-after") else " no Retry-After")
            with self.lock:
                self.responses[f"{response.request.url.path} {response.status_code}{retry}"] += 1


class Setup:
    """A throwaway CA home and its serve process."""

    def __init__(self, args: argparse.Namespace) -> None:
        from trustyard.testing import free_port

        base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
        self.work = Path(tempfile.mkdtemp(prefix="bench-fleet-", dir=base))
        self.home, port = self.work / "home", free_port()
        self.url, self.workers = f"https://127.0.0.1:{port}", args.workers
        cli(self.home, "init", "--allow", "*.bench.internal", "--listen", f"127.0.0.1:{port}")
        toml = self.home / "trustyard.toml"
        # certificates of 1 h / time scale: the token provisioner's minimum comes down to 10 s
        toml.write_text(toml.read_text().replace('min_ttl = "5m"', 'min_ttl = "10s"', 1)
                        + f'\n[rotation]\ncheckin_interval = "{args.interval}"\n')
        self.root, self.log = self.home / "ca" / "root.crt", self.work / "serve.log"
        started = time.time()
        self.serve = start_serve(self.home, self.workers, self.log)
        self.startup = wait_healthy(self.url, self.root, self.serve, self.log, step=0.05) - started
        self.has_emergency = cli(self.home, "emergency", "--help", check=False).returncode == 0

    def tokens(self, names: list[str]) -> list[str]:
        from trustyard.ca.home import load_authority

        authority = load_authority(self.home, PASSWORD.encode(), minting=True)
        try:
            return [authority.mint_token("default", n, [n], ttl=timedelta(hours=3)) for n in names]
        finally:
            authority.store.close()

    def fleet(self, prefix: str, n: int, ttl: str, interval: float, roots: float, stats: FleetStats,
              http: HTTPBackend, seed: int, backoff: Backoff | None = None) -> list[Agent]:
        names = [f"{prefix}{i}.bench.internal" for i in range(n)]
        tokens, clock, rng, agents = self.tokens(names), SystemClock(), random.Random(seed), []
        for i, name in enumerate(names):
            out = MemoryOutput(str(i))
            out.on_write = stats.written
            stats.outputs.append(out)
            backend = CountingBackend(http, stats, i, out)
            spec = cert_spec({"name": name, "out": f"/nonexistent/{name}", "ttl": ttl,
                              "verify_endpoint": SERVICE, "verify_grace": "1s"})
            extra = {"backoff": backoff} if backoff is not None else {}
            m = managed_cert(spec, backend, out, clock, rng=random.Random(rng.random()),
                             environ={"TRUSTYARD_TOKEN": tokens[i]}, **extra)
            config = AgentConfig(ca_url=self.url, root=self.root, certificates=(spec,),
                                 roots_interval=timedelta(seconds=roots), checkin_interval=timedelta(seconds=interval))
            agent = Agent(config, backend, [m], clock, rng=random.Random(rng.random()))
            agent.start()
            agents.append(agent)
        return agents

    def http(self, stats: FleetStats) -> HTTPBackend:
        http = HTTPBackend(self.url, self.root, timeout=30)
        http.client.http.event_hooks["response"].append(stats.response)
        return http

    def ledger_status(self, serials: list[int]) -> Counter[str]:
        from trustyard.ca.home import load_authority

        authority = load_authority(self.home, PASSWORD.encode())
        try:
            return Counter((r.status if (r := authority.store.get(serial_text(s))) else "missing") for s in serials)
        finally:
            authority.store.close()

    def scrape(self) -> dict[tuple[str, float], float]:
        """serve's latency histogram: (route, upper bound) -> cumulative count."""
        text = httpx.get(self.url + "/metrics", verify=str(self.root), timeout=30).text
        buckets: dict[tuple[str, float], float] = {}
        for m in re.finditer(r'^trustyard_request_duration_seconds_bucket\{([^}]*)\} (\S+)$', text, re.M):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
            buckets[(labels.get("route", ""), float(labels["le"]))] = float(m.group(2))
        return buckets

    def close(self) -> None:
        stop_serve(self.serve)


def server_p99(before: dict[tuple[str, float], float], after: dict[tuple[str, float], float],
               route_has: str = "") -> tuple[float | None, int]:
    """The upper bound of the bucket holding the 99th percentile of the requests between two
    scrapes (routes containing ``route_has``), and how many requests that was."""
    delta: Counter[float] = Counter()
    for (route, le), count in after.items():
        if route_has in route:
            delta[le] += count - before.get((route, le), 0)
    total = delta.get(float("inf"), 0)
    if not total:
        return None, 0
    for le in sorted(delta):
        if delta[le] >= 0.99 * total:
            return le, int(total)
    return None, int(total)


def run_fleet(agents: list[Agent], stats: FleetStats, threads: int, ramp: float) -> Fleet:
    fleet = Fleet(agents, stats, threads, ramp=ramp)
    fleet.start()
    return fleet


# -- phase 1 ------------------------------------------------------------------------------------

def emergency(setup: Setup, args: argparse.Namespace, interval: float) -> dict[str, Any]:
    n, stats = args.agents, FleetStats(args.agents)
    http = setup.http(stats)
    agents = setup.fleet("e", n, "24h", interval, args.roots_interval, stats, http, args.seed)
    fleet = run_fleet(agents, stats, args.threads, ramp=interval)
    try:
        until(lambda: all(stats.checked), interval * 4 + n / 20, "every agent to bootstrap and check in")
        time.sleep(interval / 2)
        for i, a in enumerate(agents):
            stats.old[i] = a.managed[0].serial
        before = dict(stats.requests)
        counts: list[tuple[float, dict[str, int]]] = []
        cpu0, lag0 = tree_cpu_seconds(setup.serve.pid), len(stats.lag)
        t0 = time.time()
        if setup.has_emergency:
            command = ["emergency", "--all", "--reason", args.reason, "--grace", args.grace]
            cli(setup.home, *command, timeout=300)
            how = "trustyard " + " ".join(command)
        else:
            from trustyard.ca.fleet import Fleet as CAFleet
            from trustyard.ca.home import load_authority
            from trustyard.store.fleet_store import FleetStore

            authority = load_authority(setup.home, PASSWORD.encode())
            CAFleet(authority, FleetStore(authority.store)).request_renewal(None)
            authority.store.close()
            how = "Fleet.request_renewal(all) in-process (no `trustyard emergency` on this branch)"
        t_cmd = time.time()
        stop = threading.Event()

        def poll_status() -> None:
            while setup.has_emergency and not stop.wait(args.status_every):
                r = cli(setup.home, "emergency", "status", "--json", check=False)
                if r.returncode == 0:
                    counts.append((time.time() - t0, json.loads(r.stdout).get("counts", {})))

        poller = threading.Thread(target=poll_status, daemon=True)
        poller.start()
        with contextlib.suppress(RuntimeError):  # the figures say who did not
            until(lambda: all(stats.reported_at), 300 + interval * 2, "every replacement reported", step=0.25)
        revoked: Counter[str] = Counter()
        t_revoked = None
        if setup.has_emergency:
            deadline = time.time() + parse_duration(args.grace).total_seconds() + 2 * interval + 60
            while time.time() < deadline:
                revoked = setup.ledger_status([s for s in stats.old if s is not None])
                if revoked.get("revoked", 0) == n:
                    t_revoked = time.time()
                    break
                time.sleep(2)
        else:
            revoked = setup.ledger_status([s for s in stats.old if s is not None])
        stop.set()
        poller.join(timeout=60)
        cpu = tree_cpu_seconds(setup.serve.pid) - cpu0
        t_done = time.time()
        if setup.has_emergency:  # the CA's own count once everything is done
            final = cli(setup.home, "emergency", "status", "--json", check=False)
            if final.returncode == 0:
                counts.append((time.time() - t0, json.loads(final.stdout).get("counts", {})))
    finally:
        fleet.stop()
        http.close()
    replaced = [t - t0 for t in stats.replaced_at if t is not None]
    latency = {k: [e - b for kind, b, e in stats.timings if kind == k and b >= t0] for k in ("renew", "checkin")}
    reported = [t - t0 for t in stats.reported_at if t is not None]

    def first(share: float) -> float | None:
        for at, c in counts:
            if c.get("replaced", 0) >= share * n:
                return round(at, 1)
        return None

    def share_by(times: list[float], share: float) -> float | None:
        k = int(share * n + 0.999999) - 1
        return round(sorted(times)[k], 1) if len(times) > k else None

    return {
        "agents": n, "interval_s": interval, "trigger": how, "trigger_s": round(t_cmd - t0, 1),
        "replaced": len(replaced), "reported": len(reported),
        "replaced_99_s": share_by(replaced, 0.99), "replaced_100_s": share_by(replaced, 1.0),
        "reported_99_s": share_by(reported, 0.99), "reported_100_s": share_by(reported, 1.0),
        "status_replaced_99_s": first(0.99), "status_replaced_100_s": first(1.0),
        "status_last": counts[-1][1] if counts else None,
        "old_status": dict(revoked), "all_revoked_s": round(t_revoked - t0, 1) if t_revoked else None,
        "ca_cpu_s": round(cpu, 1), "wall_s": round(t_done - t0, 1),
        "tick_lag_p99_s": round(percentile(stats.lag[lag0:], 0.99) or 0, 3),
        "client_p50_p99_ms": {k: [round(1000 * (percentile(v, q) or 0), 1) for q in (0.5, 0.99)]
                              for k, v in latency.items()},
        "requests": {k: v - before[k] for k, v in stats.requests.items()}, "directives": stats.directives,
        "failed_requests": len(stats.failures), "failures": stats.failures[:30],
        "failure_kinds": dict(Counter(f"{k}: {r}" for k, _, r in stats.failed_at)),
        "error_responses": dict(stats.responses),
    }


# -- phase 2 ------------------------------------------------------------------------------------

def outage(setup: Setup, args: argparse.Namespace, interval: float) -> dict[str, Any]:
    n, scale, stats = args.agents, args.time_scale, FleetStats(args.agents)
    life, down, goal = 3600 / scale, 900 / scale, 120 / scale
    ttl = format_duration(timedelta(seconds=round(life)))
    base = Backoff()
    backoff = Backoff(base=base.base / scale, cap=base.cap / scale, floor=base.floor / scale)
    http = setup.http(stats)
    agents = setup.fleet("o", n, ttl, interval, args.roots_interval, stats, http, args.seed + 1, backoff)
    fleet = run_fleet(agents, stats, args.threads, ramp=life)  # renewal points spread over a lifetime
    t_start = time.time()
    try:
        time.sleep(1.2 * life)  # the first renewal points fall in 0.66-1.66 lifetimes (66% +-10%)
        t_down = time.time()
        stop_serve(setup.serve, kill=True)
        # started again so that it answers `down` after the kill: serve's start-up (measured at
        # the first start) is part of the outage
        time.sleep(max(0.0, down - setup.startup))
        t_restart = time.time()
        setup.serve = start_serve(setup.home, setup.workers, setup.log)
        t_back = wait_healthy(setup.url, setup.root, setup.serve, setup.log, step=0.05)
        scraped0 = setup.scrape()
        overdue = {}
        for i, a in enumerate(agents):
            m = a.managed[0]
            last = stats.outputs[i].installs[-1][0] if stats.outputs[i].installs else 0
            if m.renew_point is not None and m.renew_point.timestamp() <= t_back and last < t_down:
                overdue[i] = m.renew_point.timestamp()

        def renewed_after(i: int) -> float | None:
            return next((t for t, _, _ in stats.outputs[i].installs if t >= t_back), None)

        def settled(i: int) -> bool:  # renewed, or expired (a lost certificate renews no more)
            na = agents[i].managed[0].not_after
            return renewed_after(i) is not None or (na is not None and na.timestamp() <= time.time())

        with contextlib.suppress(RuntimeError):  # the figures say who did not
            until(lambda: all(settled(i) for i in overdue), 2 * life, "overdue renewals", step=0.2)
        t_burst = max([t for i in overdue if (t := renewed_after(i)) is not None], default=t_back + goal)
        scraped1 = setup.scrape()
        time.sleep(max(0.0, t_back + 1.2 * life - time.time()))  # every certificate renews after it
    finally:
        fleet.stop()
        http.close()
    t_end = time.time()
    expired: Counter[str] = Counter()  # by when notAfter passed with no replacement written yet
    worst = None

    def when(t: float) -> str:
        return "before the outage" if t < t_down else ("during it" if t < t_back else "after it")

    lost: list[str] = []  # what became of each certificate that expired in service
    for i, out in enumerate(stats.outputs):
        gone = None
        for (_, not_after, _), (next_at, _, _) in zip(out.installs, out.installs[1:], strict=False):
            margin = not_after.timestamp() - next_at
            worst = margin if worst is None else min(worst, margin)
            if margin < 0:
                expired[when(not_after.timestamp())] += 1
                gone = not_after.timestamp()
        if not out.installs:
            expired["never issued"] += 1
        elif out.installs[-1][1].timestamp() < t_end:
            gone = out.installs[-1][1].timestamp()
            expired[when(gone)] += 1
        if gone is not None and len(lost) < 10:
            m = agents[i].managed[0]
            lost.append(f"agent {i}: notAfter at {gone - t_down:+.1f} s from the kill; installs at "
                        f"{[round(t - t_down, 1) for t, _, _ in out.installs]}; failures {m.failures}: {m.last_error}")
    waits = sorted(t - t_back for i in overdue if (t := renewed_after(i)) is not None)
    burst = [(e - s, k) for k, s, e in stats.timings if t_back <= s <= t_burst]
    windows: Counter[str] = Counter()
    for kind, at, reason in stats.failed_at:
        window = "before" if at < t_down else ("outage" if at < t_back else "after")
        windows[f"{window}: {kind}: {reason}"] += 1
    bad_after = {k: v for k, v in windows.items() if k.startswith("after") and "HTTP 503" not in k}
    no_retry_after = {k: v for k, v in stats.responses.items() if "no Retry-After" in k}
    renew_p99, renew_n = server_p99(scraped0, scraped1, "renew")
    all_p99, all_n = server_p99(scraped0, scraped1)
    return {
        "agents": n, "time_scale": scale, "certificate_s": round(life), "outage_s": round(down, 1),
        "interval_s": interval, "backoff": f"base {base.base / scale}, cap {base.cap / scale}",
        "ca_startup_s": round(setup.startup, 2), "ca_restart_to_healthy_s": round(t_back - t_restart, 2),
        "ca_down_s": round(t_back - t_down, 1),
        "renewals": stats.requests["renew"], "bootstraps": stats.requests["sign"],
        "expired_in_service": sum(expired.values()), "expired_when": dict(expired), "expired_detail": lost,
        "tick_lag_p99_s": round(percentile(stats.lag, 0.99) or 0, 3),
        "tightest_margin_s": round(worst, 1) if worst is not None else None,
        "overdue_agents": len(overdue), "overdue_renewed": len(waits),
        "back_to_renewed_p50_s": round(percentile(waits, 0.5), 2) if waits else None,
        "back_to_renewed_max_s": round(waits[-1], 2) if waits else None,
        "recovery_goal_real_s": 120, "recovery_goal_scaled_s": round(goal, 1),
        "burst_s": round(t_burst - t_back, 1), "burst_requests": len(burst),
        "burst_client_p99_ms": round(1000 * percentile([d for d, _ in burst], 0.99), 1) if burst else None,
        "burst_client_renew_p99_ms": round(1000 * (percentile([d for d, k in burst if k == "renew"], 0.99) or 0), 1),
        "burst_server_p99_le_s": all_p99, "burst_server_requests": all_n,
        "burst_server_renew_p99_le_s": renew_p99, "burst_server_renews": renew_n,
        "failures_by_window": dict(windows), "failed_after_outage_not_503": sum(bad_after.values()),
        "error_responses": dict(stats.responses), "error_responses_without_retry_after": sum(no_retry_after.values()),
        "requests": stats.requests, "directives": stats.directives, "wall_s": round(t_end - t_start, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=5000)
    parser.add_argument("--interval", default="30s", help="the agents' check-in interval")
    parser.add_argument("--roots-interval", type=float, default=300, help="trust bundle poll, seconds")
    parser.add_argument("--time-scale", type=float, default=60, help="outage phase: 1 h certs and 15 min outage / S")
    parser.add_argument("--phase", choices=("both", "emergency", "outage"), default="both")
    parser.add_argument("--grace", default="5m", help="emergency --grace")
    parser.add_argument("--reason", default="keyCompromise", help="emergency --reason (a revocation reason)")
    parser.add_argument("--status-every", type=float, default=5, help="seconds between `emergency status` polls")
    parser.add_argument("--workers", type=int, default=2, help="serve worker processes")
    parser.add_argument("--threads", type=int, default=16, help="threads ticking the agents")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 20 agents, 2 s check-ins, scale 60")
    parser.add_argument("--json", action="store_true", help="print the JSON document instead of the table")
    args = parser.parse_args(argv)
    if args.quick:
        args.agents, args.interval, args.time_scale = min(args.agents, 20), "2s", 60
        args.grace, args.status_every, args.threads = "10s", 1, 4
    logging.basicConfig(level=logging.CRITICAL)  # thousands of agents' logs are not the point
    interval = parse_duration(args.interval).total_seconds()
    setup = Setup(args)
    result: dict[str, Any] = {"machine": machine(), "branch_has_emergency": setup.has_emergency,
                              "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")}
    try:
        if args.phase in ("both", "emergency"):
            result["emergency"] = emergency(setup, args, interval)
        if args.phase in ("both", "outage"):
            result["outage"] = outage(setup, args, interval)
    finally:
        setup.close()
    log = setup.log.read_text().splitlines()
    result["serve_log_errors"] = [line for line in log if "Traceback" in line or " ERROR " in line][:20]
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "fleet.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    good = ok(result)
    print(json.dumps(result, indent=2, default=str) if args.json else
          f"{result['machine']['cpu']} x{result['machine']['cores']}, load {result['machine']['loadavg']}\n"
          + table(result) + f"\ngoals {'met' if good else 'NOT met'}")
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
