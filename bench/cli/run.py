"""bench/cli: start-up time of local commands, with `trustyard --help` as the baseline.

    python3 bench/cli/run.py [--runs 21] [--ref DIR]

Creates a throwaway CA home (unencrypted keys, in $TMPDIR) and times each command as a
subprocess, ``--runs`` times, interleaved (one run of each command per round, so a change
in the machine's load hits every command alike), reporting the median wall time and its
ratio to ``--help``, and the median CPU time (user + system, from ``wait4``) of the child:
on a shared, loaded machine wall times swing with the load while CPU time mostly does not.
``--ref DIR`` also times the same commands with another checkout's
``src`` first on PYTHONPATH (e.g. ``--ref /path/to/main``), for a before/after table.

Writes bench/out/cli.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TRUSTYARD = [sys.executable, "-m", "trustyard"]


def commands(home: Path) -> dict[str, list[str]]:
    """What to run; the last two rows are not trustyard: the interpreter alone, and the
    interpreter importing SQLAlchemy (the floor of any command that opens the store)."""
    return {
        "--help": [*TRUSTYARD, "--help"],
        "token NAME --home H": [*TRUSTYARD, "token", "bench.internal", "--home", str(home)],
        "list --home H": [*TRUSTYARD, "list", "--home", str(home)],
        "audit --home H --limit 1": [*TRUSTYARD, "audit", "--home", str(home), "--limit", "1"],
        "(python3 -c pass)": [sys.executable, "-c", "pass"],
        "(python3 -c 'import sqlalchemy')": [sys.executable, "-c", "import sqlalchemy"],
    }


def once(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one run."""
    start = time.perf_counter()
    child = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(args)} exited {child.returncode}")
    return wall, usage.ru_utime + usage.ru_stime


def time_all(src: Path, cmds: dict[str, list[str]], runs: int) -> dict[str, list[tuple[float, float]]]:
    # .pyc files are written (by the warm-up run), as for an installed package: with
    # PYTHONDONTWRITEBYTECODE inherited, every run would compile trustyard's sources again.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(src)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in cmds}
    for args in cmds.values():  # warm the page cache and the .pyc files; check they work
        once(args, env)
    for _ in range(runs):
        for name, args in cmds.items():
            times[name].append(once(args, env))
    return times


def table(label: str, times: dict[str, list[tuple[float, float]]]) -> list[dict[str, object]]:
    def median(name: str, which: int) -> float:
        return statistics.median(t[which] for t in times[name])

    rows = [{"command": name, "median_ms": round(median(name, 0) * 1000, 1),
             "min_ms": round(min(t[0] for t in times[name]) * 1000, 1),
             "ratio_to_help": round(median(name, 0) / median("--help", 0), 2),
             "cpu_median_ms": round(median(name, 1) * 1000, 1),
             "cpu_ratio_to_help": round(median(name, 1) / median("--help", 1), 2)} for name in times]
    print(f"\n{label}")
    print(f"{'command':<33} {'median ms':>10} {'min ms':>8} {'x --help':>9} {'cpu ms':>8} {'x --help':>9}")
    for r in rows:
        print(f"{r['command']:<33} {r['median_ms']:>10} {r['min_ms']:>8} {r['ratio_to_help']:>9} "
              f"{r['cpu_median_ms']:>8} {r['cpu_ratio_to_help']:>9}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--ref", type=Path, default=None, help="another checkout to compare with (its src/)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="trustyard-bench-cli-") as tmp:
        home = Path(tmp) / "home"
        subprocess.run([*TRUSTYARD, "init", "--home", str(home), "--insecure-no-password"],
                       env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, check=True, stdout=subprocess.DEVNULL)
        cmds = commands(home)
        result: dict[str, object] = {"runs": args.runs, "python": platform.python_version(),
                                     "machine": platform.machine(), "cpus": os.cpu_count(),
                                     "load_before": os.getloadavg()[0]}
        result["this"] = table(f"this checkout ({ROOT})", time_all(ROOT / "src", cmds, args.runs))
        if args.ref:
            result["ref"] = table(f"reference ({args.ref})", time_all(args.ref.resolve() / "src", cmds, args.runs))
        result["load_after"] = os.getloadavg()[0]
    print(f"\nload average (1 min): {result['load_before']:.2f} before, {result['load_after']:.2f} after")
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "cli.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
