"""``bench/migrate/plan.py --quick``: `migrate plan --save` over fifty self-signed identities,
two hundred client locations in four formats and five live loopback listeners; the figures
the benchmark prints are there and every identity, location and endpoint is placed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_plan_benchmark_places_a_small_estate(tmp_path: Path) -> None:
    """The quick run exits 0: one boundary per identity, each of the 200 locations on its
    boundary (PEM, JKS, PKCS#12 and manifests), the 5 endpoints tied to their files, and a
    measured wall time, CPU time and peak RSS of the plan's own process."""
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "migrate" / "plan.py"), "--quick", "--json",
                             "--cache", str(tmp_path)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    doc = json.loads(result.stdout)
    assert doc["problems"] == [] and doc["met"] is True
    assert (doc["certificates"], doc["locations"], doc["endpoints"]) == (50, 200, 5)
    assert doc["boundaries"] == 50 and doc["client_locations"] == 200
    assert doc["locations_by_kind"] == {"pem": 140, "jks": 20, "p12": 20, "manifest": 20}
    assert doc["boundaries_with_endpoint"] == 5
    assert 0 < doc["wall_s"] < 600 and doc["cpu_s"] > 0 and 20 < doc["peak_rss_mib"] < 1024
