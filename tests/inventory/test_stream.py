"""The streamed scan (a ledger in SQLite, spilled to a temporary file past a bound) finds and
prints exactly what the in-memory scan does: the same certificates, keys, findings and
renderings, whether the ledger stayed in memory or was spilled after its first row."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from trustyard.inventory import ScanOptions, run_scan
from trustyard.inventory.findings import Rules
from trustyard.inventory.ledger_report import write_csv, write_json, write_prometheus, write_table
from trustyard.inventory.report import to_csv, to_json, to_prometheus, to_table
from trustyard.inventory.scan import stream_scan

from .test_mess import mess  # noqa: F401  (fixture: the openssl mess with JKS, PKCS#12 and a Secret)
from .test_scan import ca, estate  # noqa: F401  (fixtures: one instance of every finding)

NOW = datetime.now(UTC)


def _options(estate: dict[str, Path]) -> ScanOptions:  # noqa: F811
    base = estate["base"]
    return ScanOptions(paths=(str(base),), ca_bundles=(str(estate["ca"]),),
                       environments=(("prod", str(base / "envs" / "prod")), ("staging", str(base / "envs" / "staging"))),
                       rules=Rules(now=NOW))


def _rendered(scan: object) -> dict[str, str]:
    out = {}
    for name, write in (("json", write_json), ("csv", write_csv), ("prometheus", write_prometheus)):
        buf = io.StringIO()
        write(scan, buf)  # type: ignore[operator]
        out[name] = buf.getvalue()
    buf = io.StringIO()
    write_table(scan, buf, now=NOW)  # type: ignore[arg-type]
    out["table"] = buf.getvalue()
    return out


@pytest.mark.parametrize("spill_at", [1, 10**9], ids=["spilled", "in-memory"])
def test_streamed_scan_prints_what_the_in_memory_scan_prints(estate: dict[str, Path], spill_at: int,  # noqa: F811
                                                            tmp_path: Path) -> None:
    options = _options(estate)
    inv = run_scan(options)
    scan = stream_scan(options, spill_at=spill_at, directory=str(tmp_path))
    try:
        assert scan.ledger.spilled == (spill_at == 1)
        if scan.ledger.spilled:  # a real file on disk, not SQLite's memory
            assert scan.ledger.path and os.path.getsize(scan.ledger.path) > 0
        assert [f.to_json() for f in scan.findings] == [f.to_json() for f in inv.findings]
        codes = {f.code for f in scan.findings}
        assert {"shared_cert", "shared_key", "leaf_in_trust_store", "cross_environment", "key_mismatch",
                "untrusted_chain", "missing_intermediate", "self_signed_leaf", "expired"} <= codes, codes
        rendered = _rendered(scan)
        assert rendered["json"] == to_json(inv)
        assert rendered["csv"] == to_csv(inv)
        assert rendered["prometheus"] == to_prometheus(inv)
        assert rendered["table"] == to_table(inv, now=NOW)
    finally:
        scan.close()
    assert not list(tmp_path.iterdir()), "the spill file is deleted on close"


def test_keystores_and_manifests_spilled_match(mess: Path, tmp_path: Path) -> None:  # noqa: F811
    """JKS, PKCS#12 and a Kubernetes Secret (one self-signed certificate in 8 places) through a
    ledger spilled after its first row: the roles judged from the ledger are the in-memory ones."""
    options = ScanOptions(paths=(str(mess),), rules=Rules(now=NOW))
    inv = run_scan(options)
    scan = stream_scan(options, spill_at=1, directory=str(tmp_path))
    try:
        assert scan.ledger.spilled
        assert [f.to_json() for f in scan.findings] == [f.to_json() for f in inv.findings]
        assert {"shared_cert", "shared_key", "leaf_in_trust_store"} <= {f.code for f in scan.findings}
        assert _rendered(scan)["json"] == to_json(inv)
        assert _rendered(scan)["table"] == to_table(inv, now=NOW)
    finally:
        scan.close()


_LAUNCH = (  # fork + exec, so the child's ru_maxrss is its own and not this test process's
    "import os, sys\n"
    "pid = os.fork()\n"
    "if pid == 0:\n"
    "    os.dup2(os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 1)\n"
    "    os.execvp(sys.argv[2], sys.argv[2:])\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "print(usage.ru_maxrss, os.waitstatus_to_exitcode(status))\n"
)


def _peak_rss_kib(tree: Path, spill_rows: int, out: Path) -> int:
    env = {**os.environ, "TRUSTYARD_SCAN_SPILL_ROWS": str(spill_rows), "TMPDIR": str(out.parent)}
    cmd = [sys.executable, "-c", "import sys; from trustyard.cli import main; sys.exit(main())",
           "scan", str(tree), "--format", "json", "--no-code"]
    launched = subprocess.run([sys.executable, "-c", _LAUNCH, str(out), *cmd], env=env, capture_output=True,
                              check=True)
    rss, status = (int(x) for x in launched.stdout.split()[-2:])
    assert status == 0, launched.stderr
    return rss


@pytest.mark.slow
def test_memory_does_not_grow_with_the_tree_once_spilled(tmp_path: Path) -> None:
    """Two trees of distinct leaves, one five times the other, scanned by the CLI with a spill
    after 2,000 rows: the peak RSS grows by a fraction of what keeping the certificates would
    take (the in-memory scan held about 11 KB a certificate: 130 MB more for the large tree)."""
    from trustyard.testing import TestCA, pem

    issuer = TestCA("Stream RSS", intermediates=0)
    sizes = {"small": 300, "large": 1_500}  # files of 8 distinct leaves each
    peaks = {}
    for name, files in sizes.items():
        tree = tmp_path / name
        tree.mkdir()
        for n in range(files):
            (tree / f"certs-{n}.pem").write_bytes(b"".join(pem(issuer.issue(f"s{n}-{j}.rss.internal").cert)
                                                           for j in range(8)))
        out = tmp_path / f"{name}.json"
        peaks[name] = _peak_rss_kib(tree, 2_000, out)
        assert out.read_text().count('"fingerprint_sha256"') == files * 8
    grown_mib = (peaks["large"] - peaks["small"]) / 1024
    # 9,600 more certificates: at 11 KB each the in-memory scan grew by ~100 MiB
    print(f"peak RSS {peaks} KiB, grown {grown_mib:.1f} MiB")
    assert grown_mib < 40, (peaks, grown_mib)  # SQLite's page cache (16 MB) fills first, then stays
    assert not list(tmp_path.glob("trustyard-scan-*.sqlite")), "the spill file is deleted"


def test_a_certificate_pushed_out_of_the_recent_memory_while_pending_is_stored_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Certificates seen again move to the front of the ledger's recent memory and can push out a
    new one still waiting for its batch; seen again, it is pending twice in one batch. It must be
    stored once, not abort the scan on the unique fingerprint."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from trustyard.inventory import ledger
    from trustyard.inventory.model import CertItem

    monkeypatch.setattr(ledger, "_RECENT", 4)
    monkeypatch.setattr(ledger, "_LOOKUP", 3)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)

    def item(i: int) -> CertItem:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"c{i}")])
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(i + 1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
                .sign(key, hashes.SHA256()))
        return CertItem(cert, f"f{i}", f"g{i}")

    items = [item(i) for i in range(5)]
    led = ledger.Ledger()
    try:
        for i in (0, 1, 2, 3, 0, 1, 2, 4, 3):  # 3 is new, then pushed out while pending, then seen again
            led.add_cert(items[i])
        led.finish()
        assert led.count("SELECT COUNT(*) FROM certs") == 5
        assert led.count("SELECT COUNT(*) FROM occ") == 9
    finally:
        led.close()
