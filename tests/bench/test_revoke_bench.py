"""``bench/revoke/run.py --quick``: the revocation benchmark end to end at a small size (a real
``trustyard serve``, wrk, and ``openssl ocsp`` in its own network namespace), with every figure
present and every sampled OCSP answer right on both sides."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trustyard.testing import need

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_revocation_benchmark_measures_both_sizes_and_both_responders() -> None:
    """The quick run exits 0 and reports the revoke API's latencies and the largest shard at
    both sizes (the second holding more revoked certificates), and OCSP responses per second
    from trustyard and openssl with no failed request and every checked answer right."""
    for tool, package in (("wrk", "wrk"), ("openssl", "openssl"), ("unshare", "util-linux"), ("ip", "iproute2"),
                          ("nginx", "nginx")):
        need(tool, package=package)
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "revoke" / "run.py"), "--quick", "--json"],
                            capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    doc = json.loads(result.stdout)
    small, large = doc["small"], doc["large"]
    assert small["revoked_in_ledger"] < large["revoked_in_ledger"]
    for size in (small, large):
        assert 0 < size["revoke_api"]["p50_ms"] <= size["revoke_api"]["p99_ms"]
        assert size["revoke_api"]["revocations"] == 20
        shard = size["largest_shard"]
        assert shard["entries"] > 0 and shard["bytes"] > 0 and shard["generate_s"] > 0
    assert large["largest_shard"]["entries"] > small["largest_shard"]["entries"]
    ocsp = doc["ocsp"]
    for side in ("trustyard", "openssl", "openssl_multi2"):
        assert ocsp[side]["requests"] > 0 and ocsp[side]["errors"] == 0 and ocsp[side]["rps"] > 0
    for check in (ocsp["trustyard_check"], ocsp["openssl_check"]):
        assert check["checked"] == 40 and check["ok"] == 40, check["wrong"]
    assert ocsp["mix"]["good"] > 0 and ocsp["mix"]["revoked"] > 0
    assert ocsp["ratio"] > 0
    # the ceiling: nginx serving one fixed answer, both transports, no request failed
    for side in ("ceiling_keepalive", "ceiling_per_connection"):
        assert ocsp[side]["requests"] > 0 and ocsp[side]["errors"] == 0, ocsp[side]
    assert ocsp["ceiling_ratio"] > 0
    assert doc["serve_log_errors"] == []
