"""``bench/fleet/run.py --quick``: twenty real agents against a real ``trustyard serve`` through
an emergency re-issue and a CA outage (serve killed and started again), and every figure the
benchmark prints is there."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_fleet_benchmark_runs_a_small_fleet_through_an_emergency_and_an_outage() -> None:
    """Every agent writes and reports a replacement with a new serial (its old certificate
    revoked when the branch has ``trustyard emergency``); through the outage no certificate
    expires in service, every overdue agent renews after the CA is back, nothing fails after it
    but 503 with Retry-After, and the recovery burst's latency is measured."""
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "fleet" / "run.py"), "--quick", "--json"],
                            capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode in (0, 1), result.stdout[-3000:] + result.stderr[-3000:]
    doc = json.loads(result.stdout)
    e, o = doc["emergency"], doc["outage"]
    assert e["agents"] == 20 and e["replaced"] == 20 and e["reported"] == 20
    assert e["directives"]["renew-now"] >= 20 and e["requests"]["renew"] >= 20
    assert 0 < e["replaced_99_s"] <= e["replaced_100_s"] <= 60
    assert e["failed_requests"] == 0, e["failures"]
    if doc["branch_has_emergency"]:
        assert e["old_status"] == {"revoked": 20} and e["all_revoked_s"] is not None
        assert e["status_replaced_100_s"] is not None
    assert o["renewals"] > 20 and o["expired_in_service"] == 0
    assert o["overdue_agents"] > 0 and o["overdue_renewed"] == o["overdue_agents"]
    assert any(k.startswith("outage:") and "connection refused" in k for k in o["failures_by_window"])
    assert o["failed_after_outage_not_503"] == 0, o["failures_by_window"]
    assert o["error_responses_without_retry_after"] == 0, o["error_responses"]
    assert o["burst_requests"] > 0 and o["burst_client_p99_ms"] > 0 and o["burst_server_requests"] > 0
    assert result.returncode == (0 if doc["branch_has_emergency"] and o["back_to_renewed_max_s"] <= 120 else 1)
