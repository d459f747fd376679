"""The README's Quickstart commands are the ones that work, and CI runs the test one."""

from __future__ import annotations

import os
import re
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def quickstart_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    commands = [line for block in blocks[:2] for line in block.splitlines() if line and not line.startswith("#")]
    assert len(commands) == 2, commands
    return commands


def test_ci_runs_the_readme_test_command() -> None:
    _, test_command = quickstart_commands()
    ci = (ROOT / ".ci/run").read_text()
    assert test_command in ci.splitlines()


def test_readme_ca_command_starts_a_ca_on_defaults(tmp_path: Path) -> None:
    install_and_serve, _ = quickstart_commands()
    assert install_and_serve.startswith("python3 -m pip install . && ")
    serve = install_and_serve.split(" && ", 1)[1].split()  # the package is installed already
    assert serve[:2] == ["trustyard", "serve"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRUSTYARD_")}
    env["HOME"] = str(tmp_path)
    process = subprocess.Popen([sys.executable, "-m", "trustyard", *serve[1:]], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, start_new_session=True)
    home = tmp_path / ".trustyard"
    try:
        deadline = time.monotonic() + 30
        healthy = False
        while time.monotonic() < deadline and not healthy:
            time.sleep(0.3)
            if (home / "ca/root.crt").exists():
                try:
                    context = ssl.create_default_context(cafile=str(home / "ca/root.crt"))
                    healthy = httpx.get("https://127.0.0.1:8443/healthz", verify=context).status_code == 200
                except httpx.HTTPError:
                    pass
        assert healthy, "the CA did not come up on https://127.0.0.1:8443"
        assert (home / "trustyard.db").exists()  # SQLite by default, in ~/.trustyard
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    assert b"Created a CA in" in err
    assert b"trustyard issue orders.internal --token" in err  # says how to get the first certificate
