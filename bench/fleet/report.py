"""bench/fleet's table and its goals, from the result document ``run.py`` writes."""

from __future__ import annotations

from typing import Any


def table(r: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str]] = []
    e = r.get("emergency")
    if e:
        rows += [
            (f"EMERGENCY: {e['agents']} agents, check-in every {e['interval_s']:g} s", e["trigger"][:60], ""),
            ("replacement written+served, 99% / 100%", f"{e['replaced_99_s']} s / {e['replaced_100_s']} s",
             "<= 60 s / <= 300 s"),
            ("  ... and reported by a check-in, 99% / 100%", f"{e['reported_99_s']} s / {e['reported_100_s']} s", ""),
            ("  emergency status: replaced 99% / 100%",
             f"{e['status_replaced_99_s']} s / {e['status_replaced_100_s']} s", ""),
            ("old certificates in the ledger", ", ".join(f"{k} {v}" for k, v in e["old_status"].items()),
             f"revoked {e['agents']}"),
            ("  all revoked after", f"{e['all_revoked_s']} s", ""),
            ("failed requests", str(e["failed_requests"]), "0"),
            ("client latency p50/p99: renew, check-in",
             ", ".join(f"{a}/{b} ms" for a, b in e["client_p50_p99_ms"].values()), ""),
            ("CA CPU, emergency -> all revoked", f"{e['ca_cpu_s']} s in {e['wall_s']} s", ""),
            ("bench: agents' tick lag p99", f"{e['tick_lag_p99_s']} s", "<< the interval"),
        ]
    o = r.get("outage")
    if o:
        rows += [
            (f"OUTAGE: {o['agents']} agents, time scale {o['time_scale']:g}",
             f"{o['certificate_s']} s certs, {o['outage_s']} s down", ""),
            ("CA down (SIGKILL -> /healthz 200)", f"{o['ca_down_s']} s", ""),
            ("certificates expired in service", f"{o['expired_in_service']} "
             + ", ".join(f"{v} {k}" for k, v in o["expired_when"].items()), "0"),
            ("overdue agents renewed", f"{o['overdue_renewed']} of {o['overdue_agents']}", "all"),
            ("CA back -> overdue renewal, p50 / max",
             f"{o['back_to_renewed_p50_s']} s / {o['back_to_renewed_max_s']} s",
             f"<= 120 s (scaled {o['recovery_goal_scaled_s']} s)"),
            ("failed after the outage, not 503", str(o["failed_after_outage_not_503"]), "0"),
            ("503 without Retry-After", str(o["error_responses_without_retry_after"]), "0"),
            ("recovery burst: length, requests", f"{o['burst_s']} s, {o['burst_requests']}", ""),
            ("  p99 at the client (all / renew)", f"{o['burst_client_p99_ms']} / {o['burst_client_renew_p99_ms']} ms",
             ""),
            ("  p99 in serve (all / renew, bucket <=)",
             f"{o['burst_server_p99_le_s']} / {o['burst_server_renew_p99_le_s']} s", ""),
            ("bench: agents' tick lag p99", f"{o['tick_lag_p99_s']} s", "<< the margin"),
        ]
    width = max(len(a) for a, _, _ in rows)
    return "\n".join(f"{a:{width}}  {b:<34} {c}" for a, b, c in rows)


def ok(r: dict[str, Any]) -> bool:
    e, o, good = r.get("emergency"), r.get("outage"), True
    if e:
        good &= e["replaced_100_s"] is not None and e["replaced_99_s"] <= 60 and e["replaced_100_s"] <= 300
        good &= e["old_status"].get("revoked", 0) == e["agents"] and e["failed_requests"] == 0
    if o:
        good &= o["expired_in_service"] == 0 and o["overdue_renewed"] == o["overdue_agents"]
        good &= (o["back_to_renewed_max_s"] or 0) <= 120 and o["failed_after_outage_not_503"] == 0
        good &= o["error_responses_without_retry_after"] == 0
    return bool(good)
