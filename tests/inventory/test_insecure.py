"""The verification-off finder: every snippet of the corpus (tests/inventory/insecure_corpus) is
found at its line with its construct and nothing else is (recall 100%, no false positive); the
inline allow-insecure marker and --ignore report a finding as suppressed; the real CLI reports
verification_disabled in its JSON and table with file, line, language, construct, host and fix."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from trustyard.cli import main
from trustyard.inventory import ScanOptions, run_scan
from trustyard.inventory.findings import SEVERITY
from trustyard.inventory.insecure import scan_bytes, scan_file, views
from trustyard.inventory.insecure_rules import RULES
from trustyard.inventory.model import InsecureUse, Severity

CORPUS = Path(__file__).parent / "insecure_corpus"
EXPECTED: dict[str, list[list[object]]] = tomllib.loads((CORPUS / "expected.toml").read_text())
SCAN = [sys.executable, "-m", "trustyard", "scan"]


def _found(path: Path) -> set[tuple[int, str]]:
    return {(u.line, u.construct) for u in scan_file(path) if not u.suppressed_by}


def test_corpus_recall_is_complete_and_no_negative_is_flagged() -> None:
    expected = {(name, line, construct) for name, items in EXPECTED.items() for line, construct in items}
    got = set()
    for path in sorted((CORPUS / "pos").rglob("*")):
        if path.is_file():
            name = path.relative_to(CORPUS / "pos").as_posix()
            got |= {(name, line, construct) for line, construct in _found(path)}
    false_positives = [(p.relative_to(CORPUS).as_posix(), hit) for p in sorted((CORPUS / "neg").rglob("*"))
                       if p.is_file() for hit in sorted(_found(p))]
    misses, extra = sorted(expected - got), sorted(got - expected)
    for miss in misses:
        print("MISS", *miss)
    for fp in extra + false_positives:
        print("FALSE POSITIVE", fp)
    negatives = sum(1 for p in (CORPUS / "neg").rglob("*") if p.is_file())
    assert len(expected) >= 50 and negatives >= 30
    assert not misses and not extra and not false_positives


def test_corpus_covers_every_family_the_finder_promises() -> None:
    families = {name.split("/", 1)[0] for name in EXPECTED}
    assert families >= {"python", "go", "node", "java", "kotlin", "rust", "dotnet", "ruby", "php", "shell", "docker",
                        "config", "nginx"}
    constructs = {c for items in EXPECTED.values() for _, c in items}
    assert {r.construct for r in RULES} - constructs <= {"wgetrc check_certificate = off"}, "a rule no snippet shows"


def test_marker_on_the_same_or_previous_line_suppresses_with_its_reason(tmp_path: Path) -> None:
    src = tmp_path / "client.py"
    src.write_text("import requests\n"
                   "# trustyard: allow-insecure the lab box has no DNS name yet\n"
                   "requests.get('https://10.0.0.9/', verify=False)\n"
                   "requests.get('https://b.internal/', verify=False)  # trustyard: allow-insecure ticket 42\n"
                   "requests.get('https://c.internal/', verify=False)  # trustyard: allow-insecure\n")
    uses = {u.line: u for u in scan_file(src)}
    assert uses[3].suppressed_by == "trustyard: allow-insecure the lab box has no DNS name yet"
    assert uses[4].suppressed_by == "trustyard: allow-insecure ticket 42"
    assert uses[5].suppressed_by is None  # a marker without a reason suppresses nothing
    inv = run_scan(ScanOptions(paths=(str(tmp_path),)))
    assert [f.locations for f in inv.findings] == [(f"{src}:5",)]
    assert sorted(dict(f.facts)["line"] for f in inv.suppressed) == [3, 4]


def test_ignore_patterns_report_as_suppressed_and_do_not_fail_the_scan(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "fixture.sh").write_text("curl -k https://a.internal/\n")
    (tmp_path / "deploy.sh").write_text("wget --no-check-certificate https://b.internal/x\n")
    assert main(["scan", str(tmp_path), "--json", "--ignore", "tests/*"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert [f["file"] for f in doc["findings"]] == [str(tmp_path / "deploy.sh")]
    assert [(s["file"], s["suppressed_by"]) for s in doc["suppressed"]] == [
        (str(tmp_path / "tests" / "fixture.sh"), "--ignore tests/*")]
    assert main(["scan", str(tmp_path), "--ignore", "*.sh"]) == 0
    out = capsys.readouterr().out
    assert "No findings." in out and "SUPPRESSED (2, not counted)" in out and out.rstrip().endswith("2 suppressed")
    assert f"{tmp_path / 'deploy.sh'}:1  wget --no-check-certificate  (--ignore *.sh)" in out


def test_real_cli_json_names_file_line_language_construct_host_and_fix(tmp_path: Path) -> None:
    for name in ("python/requests_post_multiline.py", "docker/Dockerfile", "config/kubeconfig.yaml",
                 "nginx/proxy_default.conf"):
        dest = tmp_path / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes((CORPUS / "pos" / name).read_bytes())
    result = subprocess.run([*SCAN, str(tmp_path), "--json"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    findings = [f for f in json.loads(result.stdout)["findings"] if f["code"] == "verification_disabled"]
    by_file = {(Path(f["file"]).relative_to(tmp_path).as_posix(), f["line"]): f for f in findings}
    assert set(by_file) == {("python/requests_post_multiline.py", 6), ("docker/Dockerfile", 3),
                            ("docker/Dockerfile", 4), ("config/kubeconfig.yaml", 6), ("nginx/proxy_default.conf", 4)}
    py = by_file["python/requests_post_multiline.py", 6]
    assert (py["severity"], py["language"], py["construct"], py["match"]) == ("error", "python", "verify=False",
                                                                              "verify=False")
    assert py["target"] == "https://payments.internal/charge"  # from the same call, three lines above
    assert py["fix"].startswith('verify="DIR/ca.crt"') and "trustyard agent --out DIR" in py["fix"]
    assert py["locations"] == [f"{tmp_path / 'python/requests_post_multiline.py'}:6"]
    assert by_file["docker/Dockerfile", 3]["language"] == "dockerfile"
    assert by_file["docker/Dockerfile", 3]["target"] == "https://pki.internal/ca.pem"
    assert by_file["docker/Dockerfile", 4]["target"] == "pypi.internal"
    assert by_file["config/kubeconfig.yaml", 6]["target"] == "https://k8s.internal:6443"  # the cluster's server
    assert by_file["nginx/proxy_default.conf", 4]["construct"] == "proxy_pass https:// without proxy_ssl_verify on"
    table = subprocess.run([*SCAN, str(tmp_path)], capture_output=True, text=True, timeout=120).stdout
    assert table.count("verification_disabled") == 5 and "5 findings (5 error)" in table
    assert "fix: curl --cacert DIR/ca.crt" in table


def test_findings_keep_the_severity_model_and_prometheus_counts_them(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert SEVERITY[InsecureUse.CODE] is Severity.ERROR
    (tmp_path / "main.go").write_text('package main\nvar c = &tls.Config{InsecureSkipVerify: true}\n')
    assert main(["scan", str(tmp_path), "--fail-on", "critical"]) == 0
    capsys.readouterr()
    main(["scan", str(tmp_path), "--format", "prometheus"])
    assert 'trustyard_findings{code="verification_disabled",severity="error"} 1' in capsys.readouterr().out
    assert main(["scan", str(tmp_path), "--no-code"]) == 0


def test_views_blank_comments_and_strings_but_keep_offsets() -> None:
    text = 'x = "a # b"  # verify=False\n"""doc verify=False"""\ny = f(s="verify=False")\n'
    code, bare = views(text, "python")
    assert len(code) == len(bare) == len(text) and code.count("\n") == 3
    assert "verify=False" not in code.split("\n")[0] and "verify=False" not in code.split("\n")[1]
    assert 's="verify=False"' in code and 's="            "' in bare


def test_files_the_finder_does_not_read_and_shebangs() -> None:
    assert scan_bytes(b"#!/bin/sh\ncurl -k https://x.internal/\n", "run", "")[0].language == "shell"
    assert scan_bytes(b"curl -k https://x.internal/\n", "notes", "") == []  # no extension, no shebang
    assert scan_file(CORPUS / "neg" / "docs" / "README.md") == []
