"""``bench/rotate/run.py --quick``: twenty real agents check in with a real ``trustyard serve``
through an intermediate rotation driven by the CLI, and every figure the benchmark prints is
there, with no failed request and every leaf re-issued on the new intermediate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_rotation_benchmark_runs_a_small_fleet_through_a_rotation() -> None:
    """The quick run finishes, exits 0 (no failure, adoption within its goal); each agent
    bootstrapped once and renewed once, onto a leaf the new intermediate signed."""
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "rotate" / "run.py"), "--quick", "--json"],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    doc = json.loads(result.stdout)
    assert doc["agents"] == 20 and doc["failed_requests"] == 0 and doc["failures"] == []
    assert doc["requests"]["sign"] == 20 and doc["requests"]["renew"] == 20
    assert doc["directives"]["renew-now"] == 20 and doc["directives"]["refresh-bundle"] >= 1
    assert 0 < doc["published_to_100pct_adoption_s"] <= doc["adoption_goal_s"]
    assert doc["published_to_adopted_state_s"] >= doc["dwell_s"]
    assert doc["leaves_on_new_intermediate"] == 20 and len(doc["leaf_issuers_at_end"]) == 1
    steady = doc["steady"]
    assert steady["checkins"] > 0 and 0 < steady["ca_core_percent_at_interval"] < 400
    assert doc["serve_log_errors"] == []
