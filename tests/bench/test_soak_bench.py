"""``bench/soak/run.py`` at a tiny size: a real ``trustyard serve`` under the soak's mixed load
(REST issuance, renewal, ACME orders over http-01) with the probe sampling the workers and the
database, every figure of the report present and no operation failed. Too short to judge a
leak: the goals are printed, and the run must have got far enough to judge them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trustyard.testing import need

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_a_short_soak_reports_every_goal_with_no_error(tmp_path: Path) -> None:
    need("pebble-challtestsrv", package="pebble")
    out = tmp_path / "soak.json"
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "soak" / "run.py"), "--minutes", "0.3",
                             "--measure-seconds", "3", "--clients", "4", "--out", str(out)],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode in (0, 1), result.stdout[-3000:] + result.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["errors"]["operations"] == 0 and doc["errors"]["serve_log_count"] == 0, doc["errors"]
    assert doc["max_rate"]["max_ops_per_s"] > 0 and doc["max_rate"]["errors"] == 0
    assert abs(doc["rate_ops_per_s"] - doc["max_rate"]["max_ops_per_s"] / 2) < 0.01
    for kind in ("issue", "renew", "acme"):
        latency = doc["latency"][kind]
        assert latency["operations"] > 0 and latency["first_p99_ms"] > 0 and latency["last_p99_ms"] > 0
    workers = [r for r in doc["rss"].values() if r["role"] == "worker"]
    assert len(workers) == doc["workers"] and all(r["after_warmup_mib"] > 10 for r in workers)
    db = doc["database"]
    assert all(half["certificates"] > 0 and half["bytes_per_certificate"] for half in db["halves"])
    # Every REST issuance and renewal, and every ACME order, is a certificate in the ledger.
    assert db["end"]["rows"]["certificates"] >= doc["operations"]
    assert db["end"]["acme_orders_by_status"].get("valid", 0) >= doc["latency"]["acme"]["operations"]
    assert db["flat"]["acme_nonces"]["judged"] and db["flat"]["acme_nonces"]["ok"]
    assert [g["goal"] for g in doc["goals"]] == [
        "RSS growth of every worker after warm-up", "p99 last window / first window",
        "database bytes per certificate, 2nd half / 1st half", "tables of one-time things flat", "errors"]
    assert (result.returncode == 0) == all(g["ok"] for g in doc["goals"])
    assert "PASS" in result.stdout or "FAIL" in result.stdout
