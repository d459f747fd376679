"""bench/scan: `trustyard scan` on a tree of 20,500 certificates and on 200 live TLS listeners.

    python3 bench/scan/run.py [--listeners 200] [--rebuild] [--no-sslyze]

Files. A tree of mixed formats (PEM single and bundles, DER, PKCS#7 in PEM and DER,
PKCS#12 with and without a password, PEM keys, non-certificate files) is generated once
and cached under $TMPDIR/trustyard-bench-scan. In the same run it measures
  - raw: a tight loop loading each file with the right pyca/cryptography loader (the
    format is known from the manifest, no sniffing, no findings) - the ceiling;
  - in-process: `run_scan` (walk, sniff, parse, fingerprints, every finding rule);
  - CLI: `trustyard scan TREE --format json` as a subprocess, wall time including
    interpreter start and JSON rendering, peak RSS from wait4().
Endpoints. One asyncio process (tls_farm.py) listens on N loopback ports, each with its
own leaf + intermediate. It measures `trustyard scan --endpoint ...` (CLI, default
concurrency) and sslyze's certificate-info scan of the same endpoints
(`python -m sslyze --certinfo`, sslyze installed into a throwaway virtualenv because it
pins its own cryptography). Both are CLI wall times; the start-up time of each tool is
reported separately and a ratio without it is given too.

Writes bench/out/scan.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography import __version__ as cryptography_version
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key, pkcs7, pkcs12

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

import tree as tree_mod  # noqa: E402  (a sibling module, not a package)

TRUSTYARD = [sys.executable, "-c", "import sys; from trustyard.cli import main; sys.exit(main())"]
CACHE = Path(tempfile.gettempdir()) / "trustyard-bench-scan"


# ------------------------------------------------------------------ helpers

# A bare interpreter forks and execs the command: a child's peak RSS (ru_maxrss) counts the
# memory of the process it was forked from, so this one, grown by the parse runs, must not be it.
_LAUNCHER = (
    "import os, sys\n"
    "pid = os.fork()\n"
    "if pid == 0:\n"
    "    os.execvp(sys.argv[2], sys.argv[2:])\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "os.write(int(sys.argv[1]), f'{usage.ru_maxrss} {usage.ru_utime + usage.ru_stime}'.encode())\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


LAST_CPU_S = [0.0]  # user + system seconds of the last run_measured command


def run_measured(cmd: list[str], *, timeout: float = 900, stdout: Any = subprocess.DEVNULL,
                 ) -> tuple[float, int, int, bytes]:
    """Wall seconds, exit status, peak RSS (KiB) of one command, and its stdout when piped
    (its CPU time in LAST_CPU_S)."""
    rfd, wfd = os.pipe()
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", _LAUNCHER, str(wfd), *cmd], stdout=stdout,
                            stderr=subprocess.PIPE, pass_fds=(wfd,))
    os.close(wfd)
    out, err = proc.communicate(timeout=timeout)
    wall = time.perf_counter() - started
    with os.fdopen(rfd, "rb") as r:
        rss_text, _, cpu_text = r.read().decode().partition(" ")
    rss = int(rss_text or 0)
    LAST_CPU_S[0] = float(cpu_text or 0)
    if proc.returncode not in (0, 1):  # trustyard scan exits 1 when it finds errors: expected here
        raise RuntimeError(f"{cmd[:4]}... exited {proc.returncode}: {err.decode(errors='replace')[-2000:]}")
    return wall, proc.returncode, rss, out or b""


def startup(cmd: list[str]) -> float:
    best = float("inf")
    for _ in range(3):
        best = min(best, run_measured(cmd)[0])
    return best


def raw_parse(tree: Path, files: list[list[object]], skip: tuple[str, ...] = ("junk",)) -> tuple[int, float]:
    """Load every certificate file with the right loader; the cost of parsing alone."""
    count = 0
    started = time.perf_counter()
    for rel, kind, _ in files:
        if kind in skip:
            continue
        data = (tree / str(rel)).read_bytes()
        if kind in ("pem", "pem_bundle"):
            count += len(x509.load_pem_x509_certificates(data))
        elif kind == "der":
            x509.load_der_x509_certificate(data)
            count += 1
        elif kind == "p7b":
            count += len(pkcs7.load_pem_pkcs7_certificates(data))
        elif kind == "p7c":
            count += len(pkcs7.load_der_pkcs7_certificates(data))
        elif kind in ("p12", "p12_pw"):
            p12 = pkcs12.load_pkcs12(data, tree_mod.P12_PASSWORD if kind == "p12_pw" else None)
            count += (p12.cert is not None) + len(p12.additional_certs)
        elif kind == "key":
            load_pem_private_key(data, None)
    return count, time.perf_counter() - started


# ------------------------------------------------------------------ files

def bench_files(rebuild: bool) -> dict[str, object]:
    started = time.perf_counter()
    tree, manifest = tree_mod.cached(CACHE, rebuild)
    prepare = time.perf_counter() - started
    files = manifest["files"]  # type: ignore[index]
    expected = int(manifest["certificates"])  # type: ignore[arg-type]
    print(f"tree: {tree} ({len(files)} files, {expected} certificates, "  # type: ignore[arg-type]
          f"{'cached' if manifest['cached'] else f'generated in {prepare:.1f}s'})", flush=True)

    raw_runs = [raw_parse(tree, files) for _ in range(2)]  # the first also warms the page cache
    raw_count, raw_s = min(raw_runs, key=lambda r: r[1])
    assert raw_count == expected, (raw_count, expected)

    from trustyard.inventory import ScanOptions, run_scan

    t0 = time.perf_counter()
    inv = run_scan(ScanOptions(paths=(str(tree),)))
    inproc_s = time.perf_counter() - t0
    assert len(inv.certificates) == expected and not inv.errors, (len(inv.certificates), inv.errors[:3])
    findings = len(inv.findings)
    del inv

    # PKCS#12 files dominate the raw time (each load runs the MAC's key derivation), which
    # flatters the ratio: the same figures without them show the per-certificate overhead.
    no_p12 = ("junk", "p12", "p12_pw")
    sub_files = [f for f in files if f[1] not in no_p12]  # type: ignore[union-attr]
    sub_count, sub_raw_s = min((raw_parse(tree, files, no_p12) for _ in range(2)), key=lambda r: r[1])
    t0 = time.perf_counter()
    sub = run_scan(ScanOptions(paths=tuple(str(tree / str(f[0])) for f in sub_files)))
    sub_s = time.perf_counter() - t0
    assert len(sub.certificates) == sub_count, (len(sub.certificates), sub_count)
    del sub

    cli_s, _, cli_rss, out = run_measured([*TRUSTYARD, "scan", str(tree), "--format", "json"],
                                          stdout=subprocess.PIPE)
    doc = json.loads(out)
    assert len(doc["certificates"]) == expected, len(doc["certificates"])
    # the floor: an interpreter that imports cryptography and loads nothing
    _, _, base_rss, _ = run_measured([sys.executable, "-c", "import cryptography.x509, trustyard.inventory"])
    return {
        "files": len(files),  # type: ignore[arg-type]
        "certificates": expected,
        "by_kind": manifest["by_kind"],  # type: ignore[index]
        "tree_generation_s": manifest.get("generation_seconds"),  # type: ignore[union-attr]
        "tree_cached": manifest["cached"],  # type: ignore[index]
        "raw_parse_s": round(raw_s, 3),
        "raw_certs_per_s": round(expected / raw_s),
        "inprocess_s": round(inproc_s, 3),
        "inprocess_certs_per_s": round(expected / inproc_s),
        "inprocess_ratio_to_raw": round(raw_s / inproc_s, 3),
        "cli_s": round(cli_s, 3),
        "cli_certs_per_s": round(expected / cli_s),
        "cli_ratio_to_raw": round(raw_s / cli_s, 3),
        "cli_peak_rss_mib": round(cli_rss / 1024, 1),
        "baseline_rss_mib": round(base_rss / 1024, 1),
        "findings": findings,
        "without_pkcs12": {
            "certificates": sub_count,
            "raw_certs_per_s": round(sub_count / sub_raw_s),
            "inprocess_certs_per_s": round(sub_count / sub_s),
            "inprocess_ratio_to_raw": round(sub_raw_s / sub_s, 3),
        },
    }


# ------------------------------------------------------------------ endpoints

def sslyze_python(venv: Path) -> Path:
    py = venv / "bin" / "python"
    if not py.exists() or subprocess.run([str(py), "-c", "import sslyze"], capture_output=True).returncode:
        print(f"installing sslyze into {venv} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "sslyze"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return py


def bench_endpoints(count: int, with_sslyze: bool) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="trustyard-bench-farm-"))
    farm = subprocess.Popen([sys.executable, str(HERE / "tls_farm.py"), str(work), str(count)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert farm.stdout is not None
        ports = json.loads(farm.stdout.readline())["ports"]
        targets = [f"127.0.0.1:{p}" for p in ports]
        print(f"listeners: {len(ports)} TLS ports on 127.0.0.1 (one asyncio process)", flush=True)

        from trustyard.inventory.endpoints import DEFAULT_CONCURRENCY

        cmd = [*TRUSTYARD, "scan", "--format", "json"] + [a for t in targets for a in ("--endpoint", t)]
        run_measured(cmd, stdout=subprocess.PIPE)  # warm-up: imports, page cache
        ty_s, _, ty_rss, out = run_measured(cmd, stdout=subprocess.PIPE)
        doc = json.loads(out)
        got = {c["location"] for c in doc["certificates"] if "#" not in c["location"]}
        assert len(got) == count and not doc["errors"], (len(got), doc["errors"][:3])
        ty_start = startup([*TRUSTYARD, "--version"])
        result: dict[str, object] = {
            "listeners": count,
            "trustyard_concurrency": DEFAULT_CONCURRENCY,
            "trustyard_s": round(ty_s, 3),
            "trustyard_endpoints_per_s": round(count / ty_s, 1),
            "trustyard_startup_s": round(ty_start, 3),
            "trustyard_peak_rss_mib": round(ty_rss / 1024, 1),
        }
        if with_sslyze:
            py = sslyze_python(Path(tempfile.gettempdir()) / "trustyard-bench-sslyze-venv")
            version = subprocess.run([str(py), "-c", "from sslyze.__version__ import __version__; print(__version__)"],
                                     capture_output=True, text=True).stdout.strip()
            json_out = work / "sslyze.json"
            sl_s, _, sl_rss, _ = run_measured([str(py), "-m", "sslyze", "--quiet", "--certinfo",
                                               f"--json_out={json_out}", *targets])
            report = json.loads(json_out.read_text())
            done = sum(1 for r in report["server_scan_results"]
                       if r.get("scan_status") == "COMPLETED"
                       and (r.get("scan_result") or {}).get("certificate_info", {}).get("status") == "COMPLETED")
            sl_start = startup([str(py), "-m", "sslyze", "--help"])
            result.update({
                "sslyze_version": version,
                "sslyze_s": round(sl_s, 3),
                "sslyze_completed": done,
                "sslyze_endpoints_per_s": round(count / sl_s, 1),
                "sslyze_startup_s": round(sl_start, 3),
                "sslyze_peak_rss_mib": round(sl_rss / 1024, 1),
                "ratio_to_sslyze": round(sl_s / ty_s, 2),
                "ratio_to_sslyze_without_startup": round(max(sl_s - sl_start, 1e-9) / max(ty_s - ty_start, 1e-9), 2),
            })
        return result
    finally:
        if farm.stdin:
            farm.stdin.close()
        try:
            farm.wait(timeout=10)
        except subprocess.TimeoutExpired:
            farm.kill()


# ------------------------------------------------------------------ the big estate (issue 19, item 5)

def bench_big(args: argparse.Namespace) -> int:
    import big

    plants = args.plants or max(10, args.files // 1000)
    cache = Path(tempfile.gettempdir()) / f"trustyard-bench-scan-big-{args.certs}-{args.files}"
    started = time.perf_counter()
    tree, manifest = big.cached(cache, args.certs, args.files, plants, args.workers, args.rebuild)
    rows, expected = manifest["files"], int(manifest["certificates"])
    print(f"tree: {tree} ({len(rows)} files, {expected} certificates, {manifest['by_kind']}, "
          f"{'cached' if manifest['cached'] else f'generated in {time.perf_counter() - started:.0f}s'})", flush=True)
    raw_count, raw_s, raw_cpu_s = big.raw_parse(tree, rows)  # the tree was just written or read: warm page cache
    assert raw_count == expected, (raw_count, expected)
    print(f"raw parse: {raw_s:.1f} s", flush=True)
    out_path = cache / "scan.json"
    with out_path.open("wb") as out:
        cli_s, status, rss, _ = run_measured([*TRUSTYARD, "scan", str(tree), "--format", "json"], stdout=out,
                                             timeout=6 * 3600)
    cpu_s = LAST_CPU_S[0]
    found = big.recall(out_path, manifest["planted"])
    assert found["certificates_reported"] == expected, (found["certificates_reported"], expected)
    _, _, base_rss, _ = run_measured([sys.executable, "-c", "import cryptography.x509, trustyard.inventory"])
    result = {
        "certificates": expected, "files": len(rows), "by_kind": manifest["by_kind"],
        "generation_s": manifest.get("generation_seconds"), "tree_cached": manifest["cached"],
        "raw_parse_s": round(raw_s, 2), "raw_cpu_s": round(raw_cpu_s, 2),
        "raw_certs_per_s": round(expected / raw_s), "cli_s": round(cli_s, 2), "cli_cpu_s": round(cpu_s, 2), "cli_certs_per_s": round(expected / cli_s),
        "ratio_to_raw": round(raw_s / cli_s, 3), "ratio_to_raw_by_cpu": round(raw_cpu_s / cpu_s, 3) if cpu_s else None,
        "cli_exit": status, "cli_peak_rss_mib": round(rss / 1024, 1), "baseline_rss_mib": round(base_rss / 1024, 1),
        **found,
    }
    out_path.unlink()
    recall_ok = all(found["found"][c] == n for c, n in found["planted"].items())
    rows_out = [
        ("estate", f"{expected} certificates in {len(rows)} files", f"generated in {manifest.get('generation_seconds')} s"),
        ("raw parse (cryptography, PyYAML, pyjks)", f"{result['raw_certs_per_s']} certs/s",
         f"{result['raw_parse_s']} s wall, {result['raw_cpu_s']} s CPU"),
        ("trustyard scan --format json (CLI)", f"{result['cli_certs_per_s']} certs/s",
         f"{result['cli_s']} s wall, {result['cli_cpu_s']} s CPU"),
        ("  rate / raw rate", f"{result['ratio_to_raw']}x", f"{result['ratio_to_raw_by_cpu']}x by CPU time (goal >= 0.4x)"),
        ("  peak RSS", f"{result['cli_peak_rss_mib']} MiB", f"goal <= 300 MB; idle interpreter {result['baseline_rss_mib']} MiB"),
        ("  planted found (shared_cert, shared_key, leaf_in_trust_store)",
         " / ".join(f"{found['found'][c]}/{found['planted'][c]}" for c in ("shared_cert", "shared_key", "leaf_in_trust_store")),
         f"unplanned {found['unplanned']}; all findings {found['by_code']}"),
    ]
    width = max(len(r[0]) for r in rows_out)
    vwidth = max(len(r[1]) for r in rows_out)
    print()
    print("\n".join(f"{a:<{width}}  {b:>{vwidth}}  {c}" for a, b, c in rows_out))
    target = ROOT / "bench" / "out" / "scan-big.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps({"machine": machine(), "big": result, "plants": plants,
                                  "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=2) + "\n")
    print(f"\nwrote {target}")
    return 0 if recall_ok else 1


# ------------------------------------------------------------------ report

def machine() -> dict[str, object]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "cryptography": cryptography_version, "load_avg": os.getloadavg()}


def table(files: dict[str, object], eps: dict[str, object] | None) -> str:
    rows = [
        ("files: certificates in tree", f"{files['certificates']} in {files['files']} files", ""),
        ("raw pyca/cryptography parse", f"{files['raw_certs_per_s']} certs/s", f"{files['raw_parse_s']} s"),
        ("trustyard scan (in-process)", f"{files['inprocess_certs_per_s']} certs/s",
         f"{files['inprocess_ratio_to_raw']}x raw (goal >= 0.3x)"),
        ("trustyard scan --format json (CLI)", f"{files['cli_certs_per_s']} certs/s",
         f"{files['cli_ratio_to_raw']}x raw (goal >= 0.3x)"),
        ("  the same without PKCS#12 files: raw", f"{files['without_pkcs12']['raw_certs_per_s']} certs/s",  # type: ignore[index]
         f"{files['without_pkcs12']['certificates']} certificates"),  # type: ignore[index]
        ("  the same without PKCS#12 files: in-process", f"{files['without_pkcs12']['inprocess_certs_per_s']} certs/s",  # type: ignore[index]
         f"{files['without_pkcs12']['inprocess_ratio_to_raw']}x raw"),  # type: ignore[index]
        ("  CLI peak RSS", f"{files['cli_peak_rss_mib']} MiB", f"idle interpreter {files['baseline_rss_mib']} MiB"),
    ]
    if eps:
        rows += [
            ("endpoints: TLS listeners", str(eps["listeners"]), f"concurrency {eps['trustyard_concurrency']}"),
            ("trustyard scan --endpoint (CLI)", f"{eps['trustyard_endpoints_per_s']} endpoints/s",
             f"{eps['trustyard_s']} s (start-up {eps['trustyard_startup_s']} s)"),
        ]
        if "sslyze_s" in eps:
            rows += [
                (f"sslyze {eps['sslyze_version']} --certinfo (CLI)", f"{eps['sslyze_endpoints_per_s']} endpoints/s",
                 f"{eps['sslyze_s']} s (start-up {eps['sslyze_startup_s']} s, "
                 f"{eps['sslyze_completed']} completed)"),
                ("  trustyard / sslyze", f"{eps['ratio_to_sslyze']}x",
                 f"{eps['ratio_to_sslyze_without_startup']}x without start-up (goal >= 5x)"),
            ]
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    return "\n".join(f"{a:<{width}}  {b:>{vwidth}}  {c}" for a, b, c in rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--listeners", type=int, default=200)
    ap.add_argument("--rebuild", action="store_true", help="regenerate the cached tree")
    ap.add_argument("--no-sslyze", action="store_true", help="skip the sslyze comparison")
    ap.add_argument("--no-endpoints", action="store_true")
    ap.add_argument("--certs", type=int, help="the big estate instead: this many certificates (issue 19: 1000000)")
    ap.add_argument("--files", type=int, default=200_000, help="... in this many files (with --certs)")
    ap.add_argument("--plants", type=int, help="planted findings of each kind (default files/1000, at least 10)")
    ap.add_argument("--workers", type=int, default=2, help="processes generating the big estate")
    args = ap.parse_args()
    if args.certs:
        return bench_big(args)
    files = bench_files(args.rebuild)
    eps = None if args.no_endpoints else bench_endpoints(args.listeners, not args.no_sslyze)
    print()
    print(table(files, eps))
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    doc = {"machine": machine(), "files": files, "endpoints": eps,
           "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (out / "scan.json").write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nwrote {out / 'scan.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
