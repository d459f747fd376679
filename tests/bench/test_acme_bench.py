"""``bench/acme/run.py --quick``: the ACME full flow against trustyard, step-ca (built from
Debian's sources by ``bench/acme/stepca.py``) and Pebble in one run, every server validating
http-01 against the one challenge responder on port 80."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trustyard.testing import need

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_acme_benchmark_runs_trustyard_step_ca_and_pebble_in_one_run() -> None:
    """The quick run exits 0 with every order of every server valid (no error), step-ca among
    them with its Badger database, and the ratios of trustyard to both peers and the p99s
    reported next to the goals (1.5x step-ca's orders/s, 1.0x Pebble's, p99 no higher than step-ca's)."""
    need("pebble", package="pebble")
    need("pebble-challtestsrv", package="pebble")
    need("go", package="golang-go")
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "acme" / "run.py"), "--quick", "--json"],
                            capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    doc = json.loads(result.stdout)
    assert doc["challenge_responder"].endswith("on 127.0.0.1:80 (same for all servers)")
    trustyard = [label for label in doc["servers"] if label.startswith("trustyard-w")]
    assert len(trustyard) == 1 and set(doc["servers"]) == {*trustyard, "step-ca", "pebble"}
    for label, server in doc["servers"].items():
        assert server["errors"] == 0, (label, server["rounds"])
        assert server["orders"] == 20 and server["orders_per_s"] > 0, label
        assert 0 < server["p50_ms"] <= server["p99_ms"], label
        assert server["requests_per_order"] >= 8, label
    assert Path(doc["step_ca"]["binary"]).is_file()
    assert doc["step_ca"]["stamp"]["package"].startswith("0.19")
    [(label, comparison)] = doc["comparison"].items()
    assert label.startswith("trustyard-w")
    for peer in ("step-ca", "pebble"):
        assert comparison[peer]["median_ratio"] > 0 and len(comparison[peer]["per_round"]) == 1
    assert comparison["step_ca_p99_ms"] == doc["servers"]["step-ca"]["p99_ms"]
    assert set(comparison["goals"]) == {"orders_per_s >= 1.5x step-ca", "orders_per_s >= 1.0x pebble",
                                        "p99 <= step-ca's"}
    assert "step-ca" in result.stderr and "goals:" in result.stderr
