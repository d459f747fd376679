"""The agent cannot be turned against its host: no signal to pid 0, 1, -1 or
a process group, no pid file someone else controls, no secrets in the reload command's
environment, no private key written through a symbolic link."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from trustyard.agent import actions
from trustyard.agent.actions import ReloadFailed, run_reload
from trustyard.agent.config import ReloadAction, cert_spec
from trustyard.agent.seams import FileOutput
from trustyard.errors import ConfigError

from ..support import Server
from .helpers import agent_args, mint

NOBODY = 65534


@pytest.fixture
def kills(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Record instead of sending: a wrong pid must never reach kill(2) (on a broken agent, pid 0
    or -1 would signal this test run, or every process of the user)."""
    sent: list[tuple[int, int]] = []
    monkeypatch.setattr(actions.os, "kill", lambda pid, sig: sent.append((pid, sig)))
    return sent


def _pid_file(tmp_path: Path, text: str, mode: int = 0o644) -> Path:
    path = tmp_path / "service.pid"
    path.write_text(text)
    path.chmod(mode)
    return path


def _hup(pid_file: Path) -> ReloadAction:
    return ReloadAction(signal=signal.SIGHUP, pid_file=pid_file)


@pytest.mark.parametrize("text, reason", [
    ("1\n", "1 is init"), ("0\n", "0 is the agent's own process group"), ("-1\n", "negative"),
    ("-4242\n", "negative"), ("abc\n", "not a process id"), ("", "not a process id"),
    ("12 34\n", "not a process id"), ("0x10\n", "not a process id"), ("99999999999\n", "larger than any"),
])
def test_pid_file_with_a_bad_pid_is_refused(tmp_path: Path, kills: list, text: str, reason: str) -> None:
    pid_file = _pid_file(tmp_path, text)
    with pytest.raises(ReloadFailed) as err:
        run_reload(_hup(pid_file), tmp_path)
    assert str(pid_file) in str(err.value) and reason in str(err.value)
    assert kills == []


@pytest.mark.parametrize("pid", [0, 1, -1, -7])
def test_configured_pid_below_two_is_refused(pid: int) -> None:
    with pytest.raises(ConfigError, match="pid"):
        cert_spec({"name": "a.internal", "out": "/tmp/x", "reload_signal": "HUP", "pid": pid})


def test_pid_file_writable_by_others_is_refused(tmp_path: Path, kills: list) -> None:
    for mode in (0o666, 0o664):
        pid_file = _pid_file(tmp_path, "4242\n", mode)
        with pytest.raises(ReloadFailed) as err:
            run_reload(_hup(pid_file), tmp_path)
        assert f"{pid_file} is writable by group or others" in str(err.value)
        assert f"chmod go-w {pid_file}" in str(err.value)
    assert kills == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the file to another user")
def test_pid_file_owned_by_another_user_is_refused(tmp_path: Path, kills: list) -> None:
    pid_file = _pid_file(tmp_path, "4242\n")
    os.chown(pid_file, NOBODY, NOBODY)
    with pytest.raises(ReloadFailed) as err:
        run_reload(_hup(pid_file), tmp_path)
    assert f"pid file {pid_file} is owned by" in str(err.value) and "uid 65534" in str(err.value)
    assert f"chown root {pid_file}" in str(err.value)
    assert kills == []


def test_pid_file_that_is_a_symlink_is_refused(tmp_path: Path, kills: list) -> None:
    real = _pid_file(tmp_path, "4242\n")
    link = tmp_path / "link.pid"
    link.symlink_to(real)
    with pytest.raises(ReloadFailed, match="symbolic link"):
        run_reload(_hup(link), tmp_path)
    assert kills == []


def test_good_pid_file_signals_the_service(tmp_path: Path) -> None:
    service = subprocess.Popen(["sleep", "60"])
    try:
        pid_file = _pid_file(tmp_path, f"{service.pid}\n", 0o644)
        assert run_reload(ReloadAction(signal=signal.SIGTERM, pid_file=pid_file), tmp_path) == \
            f"sent SIGTERM to pid {service.pid}"
        assert service.wait(10) == -signal.SIGTERM
    finally:
        service.kill()
        service.wait()


# -- the reload command's environment -------------------------------------------------------

SHELL_ADDS = {"PWD", "SHLVL", "_", "OLDPWD"}  # what sh itself exports
ALLOWED = {"PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TRUSTYARD_CERT_DIR"} | SHELL_ADDS


def _env_dump(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def test_reload_command_gets_a_minimal_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"TRUSTYARD_TOKEN": "tok-secret", "TRUSTYARD_PASSWORD": "pw-secret",
                        "TRUSTYARD_PASSWORD_FILE": "/run/secrets/pw", "AWS_SECRET_ACCESS_KEY": "aws-secret",
                        "LD_PRELOAD": "/tmp/evil.so", "LANG": "C.UTF-8"}.items():
        monkeypatch.setenv(name, value)
    dump, out = tmp_path / "env.txt", tmp_path / "certs"
    run_reload(ReloadAction(command=f"env > {dump}"), out)
    env = _env_dump(dump)
    assert set(env) <= ALLOWED, set(env) - ALLOWED
    assert env["TRUSTYARD_CERT_DIR"] == str(out) and env["PATH"] == os.environ["PATH"] and env["LANG"] == "C.UTF-8"
    assert "secret" not in dump.read_text() and "/run/secrets/pw" not in dump.read_text()


def test_agent_reload_command_never_sees_the_token_or_password(tmp_path: Path, ca: Server,
                                                               short_home: Path) -> None:
    """The real agent, bootstrapped from $TRUSTYARD_TOKEN, runs a reload command that dumps its env."""
    out, dump = tmp_path / "certs", tmp_path / "env.txt"
    token = mint(short_home, "envdump.internal")
    args = agent_args(ca, out, "envdump.internal", tmp_path / "absent", "--once", "--reload-cmd", f"env > {dump}")
    args.remove("--token-file")
    args.remove(str(tmp_path / "absent"))
    env = {**os.environ, "TRUSTYARD_TOKEN": token, "TRUSTYARD_PASSWORD": "pw-secret",
           "TRUSTYARD_PASSWORD_FILE": "/run/secrets/pw", "OTHER_SECRET": "other-secret"}
    done = subprocess.run([sys.executable, "-m", "trustyard", "agent", *args], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    seen = _env_dump(dump)
    assert set(seen) <= ALLOWED, set(seen) - ALLOWED
    assert seen["TRUSTYARD_CERT_DIR"] == str(out)
    text = dump.read_text()
    assert token not in text and "secret" not in text and "TRUSTYARD_TOKEN" not in text


# -- the output directory ---------------------------------------------------------------------

def _agent(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "trustyard", "agent", *args], capture_output=True, text=True,
                          timeout=60)


def test_output_directory_that_is_a_symlink_is_refused(tmp_path: Path, ca: Server, short_home: Path) -> None:
    target, link = tmp_path / "elsewhere", tmp_path / "certs"
    target.mkdir()
    link.symlink_to(target)
    token_file = tmp_path / "token"
    token_file.write_text(mint(short_home, "link.internal"))
    done = _agent(*agent_args(ca, link, "link.internal", token_file), "--once")
    assert done.returncode == 2
    assert f"the output directory {link} is a symbolic link (to {target}): refused" in done.stderr
    assert "--follow-symlinks" in done.stderr
    assert list(target.iterdir()) == []
    # the same from a config file
    config = tmp_path / "agent.toml"
    config.write_text(f'ca_url = "{ca.url}"\nroot = "{ca.root}"\n[[certificate]]\nname = "link.internal"\n'
                      f'out = "{link}"\ntoken_file = "{token_file}"\n')
    done = _agent("--config", str(config), "--once")
    assert done.returncode == 2 and "is a symbolic link" in done.stderr
    assert list(target.iterdir()) == []
    # ... unless the operator says the link is theirs
    done = _agent(*agent_args(ca, link, "link.internal", token_file), "--once", "--follow-symlinks", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["exit_code"] == 0
    assert (target / "tls.crt").exists() and (target / "tls.key").exists()


def test_output_directory_swapped_for_a_symlink_later_is_refused_at_write(tmp_path: Path) -> None:
    out, target = tmp_path / "certs", tmp_path / "elsewhere"
    target.mkdir()
    output = FileOutput(out)
    output.write_ca("-----BEGIN CERTIFICATE-----\n")  # a real directory: written
    assert (out / "ca.crt").exists() and (out / "bundle.json").exists()
    for written in out.iterdir():
        written.unlink()
    out.rmdir()
    out.symlink_to(target)
    with pytest.raises(ConfigError, match="is a symbolic link"):
        output.write_ca("-----BEGIN CERTIFICATE-----\n")
    assert list(target.iterdir()) == []
    FileOutput(out, follow_symlinks=True).write_ca("-----BEGIN CERTIFICATE-----\n")
    assert (target / "ca.crt").exists()
