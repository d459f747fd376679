"""``bench/workers/run.py`` at a small size: the write-lock comparison and the PostgreSQL
replicas run end to end and report every figure the README quotes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trustyard.testing import need

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "bench" / "out" / "workers.json"


def _run(*args: str) -> dict:
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "workers" / "run.py"), *args],
                            capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(OUT.read_text())


@pytest.mark.slow
def test_the_lock_comparison_runs_both_modes_and_the_loop_waits_only_when_it_may() -> None:
    doc = _run("--lock", "--rounds", "1", "--seconds", "1")["lock"]
    rows = {(r["mode"], r["processes"]): r for r in doc["rows"]}
    assert set(rows) == {(m, p) for m in ("suspend", "block") for p in (1, 2)}
    assert all(r["commits_per_s"] > 0 for r in rows.values())
    assert rows[("suspend", 2)]["lock_waits"] > 0  # two processes did contend, and the loop waited
    assert rows[("block", 2)]["lock_waits"] == 0 and rows[("suspend", 1)]["lock_waits"] == 0
    assert set(doc["ratio_2_to_1"]) == {"suspend", "block"}


@pytest.mark.slow
@pytest.mark.postgres
def test_the_replica_benchmark_issues_through_one_two_and_three_replicas() -> None:
    need("wrk", package="wrk")
    doc = _run("--postgres", "--rounds", "1", "--seconds", "2", "--tokens", "900")["postgres"]
    assert sorted(r["replicas"] for r in doc["rows"]) == [1, 2, 3]
    assert all(r["certs_per_s"] > 0 and r["errors"] == 0 for r in doc["rows"])
