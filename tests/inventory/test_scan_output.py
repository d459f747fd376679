"""scan output a person can read: one row per distinct certificate with its
locations beneath, a summary line, a fix: line per finding, --where by the printed prefix,
CSV without repeated codes, a missing path as a usage error, expiry relative to lifetime."""

from __future__ import annotations

import csv
import io
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from trustyard.cli import main
from trustyard.testing import TestCA, pem, self_signed

from ..diagnose.servers import NOW

SCAN = [sys.executable, "-c", "import sys; from trustyard.cli import main; sys.exit(main())", "scan"]
HOUR = timedelta(hours=1)
ROW = re.compile(r"^([0-9a-f]{16})  ", re.M)


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA("Output", intermediates=0)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory, ca: TestCA) -> Path:
    """orders.internal in three places (one with its key), billing.internal once."""
    base = tmp_path_factory.mktemp("output")
    orders = ca.issue("orders.internal")
    orders.write_pair(base / "orders", chain=False)  # tls.crt + tls.key
    for copy in ("gateway/orders.crt", "backup/orders.pem"):
        (base / copy).parent.mkdir(parents=True, exist_ok=True)
        (base / copy).write_bytes(pem(orders.cert))
    (base / "billing").mkdir()
    (base / "billing" / "billing.crt").write_bytes(pem(ca.issue("billing.internal").cert))
    return base


def test_one_row_per_distinct_certificate_with_locations_beneath(tree: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    main(["scan", str(tree)])
    out = capsys.readouterr().out
    assert re.match(r"CERTIFICATE +SUBJECT +ROLE +EXPIRES IN +LOCATIONS\n", out), out
    rows = ROW.findall(out.split("\n\n")[0])
    assert len(rows) == 2, out
    table = out.split("\n\n")[0]
    orders = re.search(r"^[0-9a-f]{16}  +SAN=orders\.internal +service +\S+ \S+ +3\n((?:    .*\n)+)", table + "\n", re.M)
    assert orders, table
    beneath = orders.group(1)
    for where in ("orders/tls.crt", "gateway/orders.crt", "backup/orders.pem", "orders/tls.key  (private key)"):
        assert where in beneath, beneath
    assert "2 distinct certificates in 4 locations, 1 private key, " in out


def test_every_finding_has_a_fix_line_with_trustyard_commands(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["scan", str(tree)])
    out = capsys.readouterr().out
    findings = re.findall(r"^(?:info|warning|error|critical) +(\w+) ", out, re.M)
    fixes = re.findall(r"^ {10}fix: (.*)$", out, re.M)
    assert findings and len(fixes) == len(findings), out
    shared = out[out.index("shared_cert"):]
    assert re.search(r"fix: one certificate per service: .*trustyard token orders\.internal; "
                     r"trustyard issue orders\.internal --token TOKEN", shared), shared


def test_where_takes_the_prefix_the_table_prints(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["scan", str(tree)])
    out = capsys.readouterr().out
    prefix = next(m.group(1) for m in ROW.finditer(out) if "orders.internal" in out[m.start():out.index("\n", m.start())])
    assert main(["scan", str(tree), "--where", prefix]) == 0
    answer = capsys.readouterr().out
    assert re.match(rf"{prefix}[0-9a-f]{{48}}: 4 locations\n", answer), answer
    assert answer.count("holds: ") == 4 and "orders/tls.key" in answer
    # too short or not hex: a usage error naming --where, not "0 locations"
    assert main(["scan", str(tree), "--where", prefix[:4]]) == 2
    assert "--where" in capsys.readouterr().err
    assert main(["scan", str(tree), "--where", "orders.internal"]) == 2
    assert "not a SHA-256 fingerprint" in capsys.readouterr().err


def test_csv_lists_each_code_once_per_row(tmp_path: Path, ca: TestCA, capsys: pytest.CaptureFixture[str]) -> None:
    ca.issue("soon.internal", not_before=NOW - 20 * 24 * HOUR, not_after=NOW + 2 * HOUR).write_pair(tmp_path / "soon", chain=False)
    self_signed(cn="legacy.internal").write_pair(tmp_path / "legacy")
    main(["scan", str(tmp_path), "--format", "csv"])
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    codes = {r["sans"] or r["subject"]: r["findings"].split() for r in rows}
    for found in codes.values():
        assert len(found) == len(set(found)), codes
    assert {"self_signed_leaf", "no_san"} <= set(codes["CN=legacy.internal"]), codes
    assert "expiring" in codes["soon.internal"], codes


def test_a_path_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir"
    proc = subprocess.run([*SCAN, str(missing)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc
    assert "does not exist" in proc.stderr and str(missing) in proc.stderr
    assert "findings" not in proc.stdout.lower()
    proc = subprocess.run([*SCAN, "--env", f"prod={missing}"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "does not exist" in proc.stderr, proc


def test_default_expiry_warning_is_relative_to_lifetime(tmp_path: Path, ca: TestCA,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    cases = {
        "fresh-24h.internal": (NOW - HOUR, NOW + 23 * HOUR, False),  # trustyard's 24 h: fine at 23 h left
        "late-24h.internal": (NOW - 18 * HOUR, NOW + 6 * HOUR, True),  # under a third of its life left
        "year-40d.internal": (NOW - 325 * 24 * HOUR, NOW + 40 * 24 * HOUR, False),
        "year-20d.internal": (NOW - 345 * 24 * HOUR, NOW + 20 * 24 * HOUR, True),  # long-lived: 30 d ahead
    }
    for name, (start, end, _) in cases.items():
        ca.issue(name, not_before=start, not_after=end).write_pair(tmp_path / name, chain=False)
    main(["scan", str(tmp_path)])
    out = capsys.readouterr().out
    expiring = "\n".join(line for line in out.splitlines() if re.match(r"warning +expiring ", line))
    for name, (_, _, warned) in cases.items():
        assert (name in expiring) is warned, (name, out)
    # an explicit --warn still wins
    main(["scan", str(tmp_path), "--warn", "2d"])
    assert "fresh-24h.internal expires in" in capsys.readouterr().out
    main(["scan", "--help"])
    assert "a third of the lifetime, at most 30d" in " ".join(capsys.readouterr().out.split())
