"""bench/migrate (a): the verification-off finder of `trustyard scan` over a generated source tree,
beside bandit and semgrep in the same run.

    python3 bench/migrate/finder.py [--files 50000] [--mb 500] [--copies 15] [--peer-share 1.0] [--rebuild]

The tree (finder_tree.py: filler code in 16 kinds of file, the corpus of
tests/inventory/insecure_corpus planted --copies times at known files and lines, positives and
look-alikes) is generated once and cached under $TMPDIR. In the same run it measures, on a warm
page cache:
  - finder: the walk plus ``insecure.scan_file`` in this process (the finder alone);
  - CLI: `trustyard scan TREE --json` as a subprocess (the whole scan: certificate sniffing of
    every file too, interpreter start, JSON); its recall is computed from the JSON it prints;
  - bandit (Python files only: its B501/B323/B502... tests) and semgrep (finder_semgrep.yml:
    rules written for the same constructs; the registry is not reachable here), installed with
    pip into a throwaway virtualenv ($TMPDIR/trustyard-bench-finders), never into trustyard's
    environment. semgrep reads about 0.3 MB/s on these machines, so a whole 500 MB tree costs it
    about half an hour: --peer-share 0.1 runs both peers (and the finder again, for a ratio on
    equal input) on a tenth of the tree, the services svc000..svc049, hard-linked.
Recall: planted (file, line, construct) found / planted; for bandit and semgrep a result counts
when its line range holds a planted line (any rule: they have no construct names of ours).
Writes bench/out/finder.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "src"))

import finder_tree  # noqa: E402  (a sibling module, not a package)

from trustyard.inventory.insecure import scan_file  # noqa: E402
from trustyard.inventory.sources import iter_files  # noqa: E402

TMP = Path(tempfile.gettempdir())
VENV = TMP / "trustyard-bench-finders"
PEERS = ("bandit>=1.7", "semgrep>=1.50")
MB = 1024 * 1024


def peers() -> Path:
    """bandit and semgrep in their own virtualenv (semgrep pins its own dependencies)."""
    if not (VENV / "bin" / "semgrep").exists() or not (VENV / "bin" / "bandit").exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", *PEERS], check=True)
    return VENV / "bin"


def timed(cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None,
          ok: tuple[int, ...] = (0, 1)) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user+sys of it and its children) and stdout of a command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=7200)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode not in ok:
        raise RuntimeError(f"{cmd[:3]} exited {proc.returncode}: {proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.stdout


def tree_bytes(tree: Path, suffix: str | None = None) -> tuple[int, int]:
    files = size = 0
    for dirpath, _, names in os.walk(tree):
        for name in names:
            if suffix is None or name.endswith(suffix):
                files += 1
                size += os.stat(os.path.join(dirpath, name)).st_size
    return files, size


def recall(planted: list[dict[str, object]], found: set[tuple[str, int, str]]) -> dict[str, object]:
    want = {(str(p["file"]), int(p["line"]), str(p["construct"])) for p in planted}  # type: ignore[call-overload]
    hit = want & found
    missed = sorted(want - found)
    return {"planted": len(want), "found": len(hit), "recall": round(len(hit) / len(want), 4) if want else None,
            "false_positives": len(found - want), "missed_examples": [list(m) for m in missed[:10]]}


def by_line(planted: list[dict[str, object]], results: list[tuple[str, int, int]]) -> dict[str, object]:
    """Peers: a planted line is found when a result's line range holds it; results holding none are extra."""
    lines: dict[str, set[int]] = {}
    for p in planted:
        lines.setdefault(str(p["file"]), set()).add(int(p["line"]))  # type: ignore[call-overload]
    hit: set[tuple[str, int]] = set()
    extra = 0
    for path, first, last in results:
        covered = {n for n in lines.get(path, ()) if first <= n <= last}
        hit |= {(path, n) for n in covered}
        extra += not covered
    total = sum(len(v) for v in lines.values())
    missed = sorted((str(p["file"]), p["line"], p["construct"]) for p in planted
                    if (str(p["file"]), p["line"]) not in hit)
    return {"planted": total, "found": len(hit), "recall": round(len(hit) / total, 4) if total else None,
            "false_positives": extra, "missed_constructs": sorted({str(m[2]) for m in missed}),
            "missed_examples": [list(m) for m in missed[:10]]}


def run_finder(tree: Path, planted: list[dict[str, object]], size: int) -> dict[str, object]:
    started, cpu0 = time.perf_counter(), time.process_time()
    uses = []
    files = 0
    for path in iter_files([tree], lambda *_: None):
        uses += scan_file(path)
        files += 1
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu0
    found = {(str(Path(u.path).relative_to(tree)), u.line, u.construct) for u in uses if not u.suppressed_by}
    return {"files": files, "mb": round(size / MB, 1), "seconds": round(wall, 2), "cpu_seconds": round(cpu, 2),
            "files_per_s": round(files / wall), "mb_per_s": round(size / MB / wall, 2),
            **recall(planted, found)}


def run_cli(tree: Path, planted: list[dict[str, object]], files: int, size: int) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TRUSTYARD_NO_PROGRESS": "1"}
    wall, cpu, out = timed([sys.executable, "-m", "trustyard", "scan", str(tree), "--json"], env=env)
    doc = json.loads(out)
    found = {(str(Path(f["file"]).relative_to(tree)), f["line"], f["construct"]) for f in doc["findings"]
             if f["code"] == "verification_disabled"}
    return {"files": files, "mb": round(size / MB, 1), "seconds": round(wall, 2), "cpu_seconds": round(cpu, 2),
            "files_per_s": round(files / wall), "mb_per_s": round(size / MB / wall, 2), **recall(planted, found)}


def run_bandit(bin_dir: Path, tree: Path, planted: list[dict[str, object]]) -> dict[str, object]:
    files, size = tree_bytes(tree, ".py")
    report = tree.parent / "bandit.json"
    wall, cpu, _ = timed([str(bin_dir / "bandit"), "-r", ".", "-f", "json", "-o", str(report), "-q"], cwd=tree)
    doc = json.loads(report.read_text())
    results = [(r["filename"].removeprefix("./"), min(r["line_range"] or [r["line_number"]]),
                max(r["line_range"] or [r["line_number"]])) for r in doc["results"]
               if r["test_id"] in ("B501", "B502", "B503", "B504", "B323")]
    py = [p for p in planted if str(p["file"]).endswith(".py")]
    return {"scope": "*.py", "files": files, "mb": round(size / MB, 1), "seconds": round(wall, 2),
            "cpu_seconds": round(cpu, 2), "mb_per_s": round(size / MB / wall, 3),
            "parse_errors": len(doc.get("errors", [])), **by_line(py, results),
            "recall_of_all_planted": round(by_line(planted, results)["found"] / len(planted), 4)}  # type: ignore[operator]


def run_semgrep(bin_dir: Path, tree: Path, planted: list[dict[str, object]]) -> dict[str, object]:
    files, size = tree_bytes(tree)
    report = tree.parent / "semgrep.json"
    wall, cpu, _ = timed([str(bin_dir / "semgrep"), "scan", "--config", str(HERE / "finder_semgrep.yml"), "--json",
                          "-o", str(report), "--metrics=off", "--disable-version-check", "--no-git-ignore", "-q", "."],
                         cwd=tree)
    doc = json.loads(report.read_text())
    results = [(r["path"].removeprefix("./"), r["start"]["line"], r["end"]["line"]) for r in doc["results"]]
    return {"files": files, "mb": round(size / MB, 1), "seconds": round(wall, 2), "cpu_seconds": round(cpu, 2),
            "mb_per_s": round(size / MB / wall, 3), "parse_errors": len(doc.get("errors", [])),
            **by_line(planted, results)}


def sample(tree: Path, share: float) -> Path:
    """The services svc000.. (a share of them) hard-linked into a sibling tree."""
    keep = max(1, round(500 * share))
    out = tree.parent / f"sample-{keep}"
    if not out.exists():
        for n in range(keep):
            src = tree / f"svc{n:03d}"
            for dirpath, _, names in os.walk(src):
                dest = out / Path(dirpath).relative_to(tree)
                dest.mkdir(parents=True, exist_ok=True)
                for name in names:
                    os.link(os.path.join(dirpath, name), dest / name)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=50_000)
    ap.add_argument("--mb", type=int, default=500)
    ap.add_argument("--copies", type=int, default=15, help="how many times each corpus snippet is planted")
    ap.add_argument("--peer-share", type=float, default=1.0, help="share of the tree bandit and semgrep scan")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--rebuild", action="store_true")
    args = ap.parse_args(argv)

    base = TMP / f"trustyard-bench-finder-{args.files}-{args.mb}-{args.copies}"
    if args.rebuild or not (base / "manifest.json").exists():
        subprocess.run(["rm", "-rf", str(base)], check=True)
        print(f"generating {args.files} files / {args.mb} MB under {base} ...", flush=True)
        finder_tree.build(base, args.files, args.mb, args.copies)
    manifest = json.loads((base / "manifest.json").read_text())
    tree, planted = base / "tree", manifest["planted"]
    files, size = tree_bytes(tree)  # (this walk also warms the page cache for every tool alike)
    results: dict[str, object] = {"tree": {"files": files, "mb": round(size / MB, 1), "planted": len(planted),
                                           "lookalike_files": manifest["lookalike_files"]}}
    print("finder (in process) ...", flush=True)
    results["finder"] = run_finder(tree, planted, size)
    print("trustyard scan --json (CLI) ...", flush=True)
    results["cli"] = run_cli(tree, planted, files, size)
    if not args.no_peers:
        bin_dir = peers()
        peer_tree = tree if args.peer_share >= 1 else sample(tree, args.peer_share)
        prefix = "" if peer_tree == tree else f"svc{round(500 * args.peer_share):03d}"
        in_sample = [p for p in planted if peer_tree == tree or str(p["file"]) < prefix]
        if peer_tree != tree:
            _, s_size = tree_bytes(peer_tree)
            results["finder_on_peer_sample"] = run_finder(peer_tree, in_sample, s_size)
        print(f"bandit on {peer_tree} ...", flush=True)
        results["bandit"] = run_bandit(bin_dir, peer_tree, in_sample)
        print(f"semgrep on {peer_tree} ...", flush=True)
        results["semgrep"] = run_semgrep(bin_dir, peer_tree, in_sample)
        results["ratios_over_semgrep"] = ratios(results)
    results["machine"] = {"cpu": _cpu(), "cores": os.cpu_count(), "python": platform.python_version(),
                          "load_average": os.getloadavg()}
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "finder.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0 if results["cli"]["recall"] == 1.0 else 1  # type: ignore[index]


def ratios(results: dict[str, Any]) -> dict[str, float]:
    """MB/s over semgrep's, by wall time and by CPU time (the machine is shared: CPU time moves less)."""
    sem = results["semgrep"]
    out = {}
    for name in ("cli", "finder", "finder_on_peer_sample"):
        if name in results:
            mine = results[name]
            out[f"{name}_wall"] = round(mine["mb_per_s"] / sem["mb_per_s"], 1)
            out[f"{name}_cpu"] = round((mine["mb"] / mine["cpu_seconds"]) / (sem["mb"] / sem["cpu_seconds"]), 1)
    return out


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    sys.exit(main())
