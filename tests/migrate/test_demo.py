"""``trustyard migrate demo DIR`` builds a working estate of self-signed services and the clients
that trust them the usual wrong ways, and prints the commands that migrate it; run as printed
(with two free ports), those commands move every boundary to done without one failed request."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs12

from trustyard.errors import ExitCode
from trustyard.testing import free_port, need

from ..support import run_cli


def run_demo(*args: str) -> tuple[int, str]:
    """``trustyard migrate demo ARGS`` in-process: (exit status, what it printed and any error)."""
    code, out, err = run_cli("migrate", "demo", *args)
    return code, out + err


def commands(printed: str, section: int) -> list[str]:
    """The command lines (indented four spaces) of the numbered section of the demo's output."""
    body = re.split(r"^(\d)\. ", printed, flags=re.M)
    text = body[body.index(str(section)) + 1]
    return [line[4:] for line in text.splitlines() if line.startswith("    ")]


def test_it_builds_the_mess_a_newcomer_recognises(tmp_path: Path) -> None:
    code, out = run_demo(str(tmp_path / "estate"), "--ports", "9441,9442")
    assert code == 0, out
    root = tmp_path / "estate"
    for service in ("billing", "ledger"):
        cert = x509.load_pem_x509_certificate((root / f"services/{service}/tls.crt").read_bytes())
        assert cert.issuer == cert.subject  # self-signed
        assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName) == [f"{service}.internal"]
        assert (root / f"services/{service}/tls.key").stat().st_mode & 0o777 == 0o600
    billing = (root / "services/billing/tls.crt").read_bytes()
    ledger = (root / "services/ledger/tls.crt").read_bytes()
    assert (root / "clients/reports/ca-bundle.pem").read_bytes() == billing  # requests' copied bundle
    assert (root / "clients/ledger-poll/ca-bundle.pem").read_bytes() == ledger  # curl's --cacert copy
    store = pkcs12.load_pkcs12((root / "clients/audit/truststore.p12").read_bytes(), b"changeit")
    assert [c.certificate for c in store.additional_certs] == [x509.load_pem_x509_certificate(ledger)]
    secret = yaml.safe_load((root / "k8s/billing-ca-secret.yaml").read_text())
    assert secret["kind"] == "Secret" and base64.b64decode(secret["data"]["ca.crt"]) == billing
    assert "verify=False" in (root / "clients/dashboard/client.py").read_text()
    assert "https://billing.internal:9441/" in (root / "clients/dashboard/client.py").read_text()
    assert "--cacert" in (root / "clients/ledger-poll/client.py").read_text()
    # what it prints: how to start it, the plan with both endpoints, each step, the fix of the insecure client
    assert "python3 bin/https_service.py services/billing 9441 run/billing.pid --watch" in out
    assert ("trustyard migrate plan services clients k8s --endpoint 127.0.0.1:9441 --endpoint 127.0.0.1:9442 "
            "--save") in commands(out, 2)
    steps = commands(out, 3)
    assert [s.split("#")[0].strip() for s in steps if s.startswith("trustyard migrate step ID --to ")][:6] == [
        f"trustyard migrate step ID --to {state}"
        for state in ("issued", "trusted", "switched", "verified", "retired", "done")]
    assert "naming clients/dashboard/client.py (verify=False)" in out
    assert json.loads((root / "estate.json").read_text())["services"][0] == {
        "name": "billing", "port": 9441, "runtime": "python"}


def test_the_estate_scans_as_the_self_signed_mess(tmp_path: Path) -> None:
    code, _ = run_demo(str(tmp_path / "estate"))
    assert code == 0
    from trustyard.cli import cli

    result = CliRunner().invoke(cli, ["scan", str(tmp_path / "estate"), "--json"], env={"TRUSTYARD_NO_PROGRESS": "1"})
    findings = json.loads(result.stdout)["findings"]
    codes = [f["code"] for f in findings]
    assert codes.count("self_signed_leaf") == 2 and codes.count("leaf_in_trust_store") == 2, codes


def test_bad_input_is_refused_and_changes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from trustyard.cli import main

    def run_demo(*args: str) -> tuple[int, str]:  # through main: the error rendered as a person sees it
        code = main(["migrate", "demo", *args])
        return code, capsys.readouterr().err

    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    code, out = run_demo(str(taken))
    assert code == ExitCode.FAILED and "is not empty" in out
    assert [p.name for p in taken.iterdir()] == ["notes.txt"]
    for ports in ("8441", "8441,8441", "8441,x", "0,8442"):
        code, out = run_demo(str(tmp_path / "new"), "--ports", ports)
        assert code == ExitCode.USAGE, out
        assert "--ports" in out
    assert not (tmp_path / "new").exists()


def test_the_readme_shows_what_the_demo_prints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("## Migrating an estate: `trustyard migrate demo`"):].split("\n## ", 1)[0]
    assert "trustyard migrate demo estate" in section
    shown = re.search(r"```text\n(.*?)```", section, re.S)
    assert shown is not None
    monkeypatch.chdir(tmp_path)
    code, out = run_demo("estate")
    assert code == 0, out
    printed = out.splitlines()
    for line in shown.group(1).splitlines():
        if line.strip() != "...":
            assert line in printed, line


@pytest.mark.slow
def test_the_printed_commands_migrate_it_without_a_failed_request(tmp_path: Path) -> None:
    need("curl")
    billing, ledger = free_port(), free_port()
    code, out = run_demo(str(tmp_path / "estate"), "--ports", f"{billing},{ledger}")
    assert code == 0, out
    root = tmp_path / "estate"
    bin_dir = tmp_path / "bin"  # `trustyard` on the PATH, as the reader has it, running this checkout
    bin_dir.mkdir()
    (bin_dir / "trustyard").write_text(f"#!/bin/sh\nexec {sys.executable} -m trustyard \"$@\"\n")
    (bin_dir / "trustyard").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRUSTYARD_")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", PYTHONPATH=os.pathsep.join(sys.path),
               TRUSTYARD_NO_PROGRESS="1", TRUSTYARD_HOME=str(root / "ca"))  # as step 1 exports it
    transcript: list[str] = []

    def sh(line: str, boundary: str = "") -> int:
        out = tmp_path / "sh.out"  # a file, not a pipe: the background processes keep theirs open
        with out.open("wb") as sink:
            done = subprocess.run(["bash", "-c", line.replace(" ID ", f" {boundary} ")], cwd=root, env=env,
                                  stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT, timeout=120)
        transcript.append(f"$ {line}  [{boundary}] -> {done.returncode}\n{out.read_text()}")
        return done.returncode

    steps = commands(out, 3)
    moves = [s.split("#")[0].strip() for s in steps if s.startswith("trustyard migrate step ID")]
    fix = next(s for s in steps if s.startswith("sed -i"))
    try:
        assert sh("\n".join(commands(out, 1))) == 0, transcript
        time.sleep(2)
        for line in commands(out, 2):  # scan exits 1: it finds what is wrong
            assert sh(line) == (1 if line.startswith("trustyard scan") else 0), "\n".join(transcript)
        sh("trustyard migrate status --json > status.json")
        for boundary in json.loads((root / "status.json").read_text())["boundaries"]:
            for move in moves[:6]:
                if sh(move, boundary["id"]) != 0:
                    assert move.endswith("--to verified") and "clients/dashboard/client.py" in transcript[-1], \
                        "\n".join(transcript)
                    assert sh(fix) == 0
                    time.sleep(1)
                    assert sh(move, boundary["id"]) == 0, "\n".join(transcript)
        time.sleep(2)
        assert sh("grep -c FAIL logs/*.log > fail-counts.txt") == 1, (root / "fail-counts.txt").read_text()
        sh("trustyard migrate status --json > status.json")
    finally:
        # The clients first: a service stopped under a client still looping makes it log a
        # "Connection refused" FAIL that is the teardown's, not the migration's.
        services = {"billing.pid", "ledger.pid"}
        pid_files = sorted((root / "run").glob("*.pid"), key=lambda path: path.name in services)
        for pid_file in pid_files:
            if pid_file.name in services:
                time.sleep(0.5)  # once, between the clients and the services: a client's last request ends
                services.clear()
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
    logs = {p.name: p.read_text().splitlines() for p in (root / "logs").glob("*.log") if "-service" not in p.name}
    assert set(logs) == {"reports.log", "ledger-poll.log", "audit.log", "dashboard.log"}
    assert {name: [line for line in lines if "FAIL" in line] for name, lines in logs.items()} == {
        name: [] for name in logs}, "\n".join(transcript)
    assert all(len(lines) >= 20 for lines in logs.values()), {n: len(lines) for n, lines in logs.items()}
    assert {b["state"] for b in json.loads((root / "status.json").read_text())["boundaries"]} == {"done"}
    assert "verify=False" not in (root / "clients/dashboard/client.py").read_text()
