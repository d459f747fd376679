"""``bench/acme/inproc.py`` and ``bench/acme/spy.py``: the two ways to see what an ACME order
costs trustyard's server without the peers or port 80 (pebble-challtestsrv on free ports)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from trustyard.testing import need

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}


@pytest.mark.slow
def test_inproc_measures_the_server_cpu_and_bytes_written_per_order() -> None:
    need("pebble-challtestsrv", package="pebble")
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "acme" / "inproc.py"), "--orders", "4",
                             "--repeats", "2", "--concurrency", "2"],
                            capture_output=True, text=True, timeout=300, cwd=ROOT, env=ENV)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    doc = json.loads(result.stdout.splitlines()[-1])
    assert len(doc["repeats"]) == 2 and 0 < doc["server_cpu_ms_per_order_min"] <= doc["server_cpu_ms_per_order_median"]
    assert doc["kib_written_per_order"] > 4  # every order commits its certificate: at least a page
    assert result.stderr.count("KiB written/order") == 2


@pytest.mark.slow
def test_spy_runs_orders_against_one_serve() -> None:
    need("pebble-challtestsrv", package="pebble")
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "acme" / "spy.py"), "--orders", "4",
                             "--concurrency", "2"],
                            capture_output=True, text=True, timeout=300, cwd=ROOT, env=ENV)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    line = result.stdout.splitlines()[-1]
    assert re.search(r"8\.0 requests/order, errors 0, server CPU \d+\.\d+ ms/order", line), line
