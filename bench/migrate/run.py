"""bench/migrate: the one command for the migration benchmarks.

    python3 bench/migrate/run.py [finder options, see finder.py --help]

Runs (a) finder.py, the verification-off finder of `trustyard scan` beside bandit and semgrep,
and then (b) plan.py, the `migrate plan` benchmark, when it is present; each writes its figures
to bench/out/. Exits non-zero when a part does.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PARTS = (("finder.py", True), ("plan.py", False))  # (script, takes this command's arguments)


def main(argv: list[str]) -> int:
    status = 0
    for script, forward in PARTS:
        path = HERE / script
        if not path.exists():
            continue
        print(f"== bench/migrate/{script}", flush=True)
        status |= subprocess.run([sys.executable, str(path), *(argv if forward else [])]).returncode
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
