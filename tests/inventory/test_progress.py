"""scan's progress bar: drawn on a terminal (a real pseudo-terminal here), never in a pipe."""

from __future__ import annotations

import io
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trustyard.testing import TestCA, pem

SCAN = [sys.executable, "-c", "import sys; from trustyard.cli import main; sys.exit(main())", "scan"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("progress")
    ca = TestCA("Progress", intermediates=0)
    for i in range(40):
        d = root / f"svc{i % 4}"
        d.mkdir(exist_ok=True)
        (d / f"svc{i}.crt").write_bytes(pem(ca.issue(f"svc{i}.internal").cert))
    return root


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TRUSTYARD_NO_PROGRESS"}
    env["COLUMNS"] = "100"
    return env


def _read_pty(master: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> bytes:
    """Everything written to the terminal until the child exits and the tty drains."""
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the last slave end closed
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    return out


def test_progress_bar_is_drawn_on_a_terminal(tree: Path, tmp_path: Path) -> None:
    master, slave = os.openpty()
    report = tmp_path / "report.json"  # a file, not a pipe: nothing to drain while we read the tty
    try:
        with report.open("wb") as out:
            proc = subprocess.Popen([*SCAN, str(tree), "--json"], stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=slave, env=_env())
        os.close(slave)
        slave = -1
        tty = _read_pty(master, proc)
        assert proc.wait(timeout=60) in (0, 1)
        stdout = report.read_bytes()
    finally:
        os.close(master)
        if slave != -1:
            os.close(slave)
    text = tty.decode(errors="replace")
    assert "scanning" in text, text
    assert "100%" in text and "[#" in text and "\r" in text, text  # a bar, redrawn in place, to the end
    # the report on stdout stays clean: the bar goes to the terminal only
    doc = json.loads(stdout)
    assert len(doc["certificates"]) == 40
    assert b"scanning" not in stdout


def test_no_progress_output_when_stderr_is_not_a_terminal(tree: Path) -> None:
    proc = subprocess.run([*SCAN, str(tree), "--json"], stdin=subprocess.DEVNULL, capture_output=True,
                          env=_env(), timeout=60)
    assert proc.returncode in (0, 1), proc.stderr
    assert b"scanning" not in proc.stderr and b"%" not in proc.stderr and b"\r" not in proc.stderr, proc.stderr
    assert len(json.loads(proc.stdout)["certificates"]) == 40


def test_no_progress_on_a_terminal_when_disabled(tree: Path) -> None:
    """TRUSTYARD_NO_PROGRESS=1 silences the bar even on a terminal (for script(1) logs, CI)."""
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen([*SCAN, str(tree), "--json"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=slave, env={**_env(), "TRUSTYARD_NO_PROGRESS": "1"})
        os.close(slave)
        slave = -1
        tty = _read_pty(master, proc)
        assert proc.wait(timeout=60) in (0, 1)
    finally:
        os.close(master)
        if slave != -1:
            os.close(slave)
    assert b"scanning" not in tty, tty


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_function_draws_only_on_a_terminal(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The function the CLI calls, given a stream that says it is a terminal, and one that does not."""
    from trustyard.cli.scan import scan_with_progress
    from trustyard.inventory import ScanOptions

    monkeypatch.delenv("TRUSTYARD_NO_PROGRESS", raising=False)
    terminal, pipe = _Terminal(), io.StringIO()
    assert len(scan_with_progress(ScanOptions(paths=(str(tree),)), terminal).certificates) == 40
    assert len(scan_with_progress(ScanOptions(paths=(str(tree),)), pipe).certificates) == 40
    assert "scanning" in terminal.getvalue() and "100%" in terminal.getvalue()
    assert pipe.getvalue() == ""
