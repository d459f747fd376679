"""``trustyard check DIR`` reads an output directory, says FAIL on failing
lines, and with ``--ca-url`` asks a real ``trustyard serve`` whether the certificate is revoked
or superseded."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from trustyard import check as checklib
from trustyard.testing import free_port

from ..support import PASSWORD, Server, internal_ca_server, run_cli

ENV = {"TRUSTYARD_PASSWORD": PASSWORD.decode()}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with internal_ca_server(tmp_path_factory.mktemp("check-ca")) as served:
        yield served


run = run_cli


def issue(server: Server, out: Path, name: str = "orders.internal") -> Path:
    code, _, err = run("issue", name, "--home", str(server.home), "--out", str(out))
    assert code == 0, err
    return out


def lines_starting(prefix: str, out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(prefix)]


def test_check_reads_tls_crt_key_and_ca_from_a_directory(server: Server, tmp_path: Path) -> None:
    out = issue(server, tmp_path / "orders")
    code, stdout, err = run("check", str(out), "--name", "orders.internal")
    assert code == 0, stdout + err
    assert "result: healthy" in stdout
    assert {"ok   key", "ok   name"} <= set(stdout.splitlines())
    assert not lines_starting("FAIL", stdout)


def test_explicit_files_win_over_the_directory(server: Server, tmp_path: Path) -> None:
    out = issue(server, tmp_path / "orders")
    other = issue(server, tmp_path / "other", "billing.internal")
    code, stdout, _ = run("check", str(out), "--key", str(other / "tls.key"))
    assert code == checklib.KeyMismatch.exit_code
    assert lines_starting("FAIL key:", stdout)
    code, stdout, _ = run("check", str(out), "--cert", str(other / "tls.crt"), "--key", str(other / "tls.key"),
                          "--name", "billing.internal")
    assert code == 0 and "billing.internal" in stdout


def test_without_dir_or_files_is_a_usage_error() -> None:
    code, _, err = run("check")
    assert code == 2 and "give DIR" in err


def test_a_missing_file_in_dir_fails_naming_it(tmp_path: Path) -> None:
    code, stdout, _err = run("check", str(tmp_path))
    assert code == checklib.CheckInputError.exit_code
    assert stdout.startswith("FAIL input:") and str(tmp_path / "tls.crt") in stdout


def test_failing_lines_start_with_fail(server: Server, tmp_path: Path) -> None:
    out = issue(server, tmp_path / "orders")
    code, stdout, _ = run("check", str(out), "--name", "billing.internal", "--min-remaining", "30d")
    assert code == checklib.NotEnoughTimeLeft.exit_code
    assert [line.split(":")[0] for line in lines_starting("FAIL", stdout)] == [
        "FAIL time_left", "FAIL name", "FAIL result"]
    assert lines_starting("FAIL name:", stdout)[0].split(":", 1)[1].strip().startswith("billing.internal")
    assert "FAIL result: 2 check(s) failed: time_left, name" in stdout
    assert "result: healthy" not in stdout


def test_ca_url_says_an_issued_certificate_is_in_good_standing(server: Server, tmp_path: Path) -> None:
    out = issue(server, tmp_path / "orders")
    code, stdout, err = run("check", str(out), "--ca-url", server.url)
    assert code == 0, stdout + err
    assert lines_starting("ok   ledger:", stdout) == ["ok   ledger:    issued, not revoked"]


def test_a_revoked_certificate_is_not_healthy(server: Server, tmp_path: Path) -> None:
    out = issue(server, tmp_path / "orders")
    code, _, err = run("revoke", "--cert", str(out / "tls.crt"), "--reason", "keyCompromise", "--home",
                       str(server.home))
    assert code == 0, err
    code, stdout, err = run("check", str(out), "--ca-url", server.url, "--root", str(server.root))
    assert code == checklib.Revoked.exit_code == 17
    # revoked wins over every other failure: a name mismatch too
    assert run("check", str(out), "--ca-url", server.url, "--name", "billing.internal")[0] == 17
    (line,) = lines_starting("FAIL ledger:", stdout)
    assert "revoked at " in line and "Z (keyCompromise)" in line
    assert "FAIL result: 1 check(s) failed: ledger" in stdout and "healthy" not in stdout
    assert err.startswith("trustyard: check failed [revoked]")
    # without --ca-url the files alone still look fine: only the CA knows
    code, stdout, _ = run("check", str(out))
    assert code == 0 and lines_starting("skip ledger:", stdout)


def test_a_superseded_certificate_is_a_warning(server: Server, tmp_path: Path) -> None:
    out = issue(server, tmp_path / "orders")
    old = tmp_path / "old"
    shutil.copytree(out, old)
    code, _, err = run("renew", "--cert", str(out / "tls.crt"), "--key", str(out / "tls.key"), "--home",
                       str(server.home))
    assert code == 0, err
    code, stdout, _ = run("check", str(old), "--ca-url", server.url)
    assert code == 0
    (line,) = lines_starting("WARN ledger:", stdout)
    assert "superseded: already renewed by" in line and "cannot be renewed again" in line
    assert "result: healthy (1 warning(s))" in stdout
    code, stdout, _ = run("check", str(out), "--ca-url", server.url)
    assert code == 0 and lines_starting("ok   ledger:", stdout)


def test_a_ca_that_does_not_answer_fails_the_check(server: Server, tmp_path: Path) -> None:
    out = issue(server, tmp_path / "orders")
    code, stdout, _ = run("check", str(out), "--ca-url", f"https://127.0.0.1:{free_port()}")
    assert code == checklib.StatusUnknown.exit_code == 18
    (line,) = lines_starting("FAIL ledger:", stdout)
    assert "the CA could not say whether" in line


def test_help_documents_the_revoked_exit_status_and_superseded_choice() -> None:
    code, out, _ = run("check", "--help")
    assert code == 0
    assert "17  Revoked" in out and "18  StatusUnknown" in out
    assert "superseded" in out and "WARN" in out
