"""Side effects on the managed service: the reload action and the live-endpoint probe."""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import signal
import socket
import ssl
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from .config import ReloadAction, parse_pid

RELOAD_TIMEOUT_SECONDS = 60
# What the reload command inherits from the agent: the basics a shell needs, nothing else (no
# bootstrap token, no CA password, no password file path, no other secret the agent runs with).
RELOAD_ENV_KEPT = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ")
# How much of the reload command's output (stdout and stderr, interleaved) the log shows.
OUTPUT_TAIL_LINES = 5
OUTPUT_LINE_CHARS = 200


class ReloadFailed(Exception):
    pass


def run_reload(action: ReloadAction, out_dir: Path) -> str:
    """Run the action; returns what was done. Raises ``ReloadFailed`` with the reason."""
    if action.command:
        env = reload_env(out_dir)
        try:
            done = subprocess.run(action.command, shell=True, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, timeout=RELOAD_TIMEOUT_SECONDS, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise ReloadFailed(f"reload command {action.command!r} timed out after {RELOAD_TIMEOUT_SECONDS}s"
                               f"{output_tail(exc.stdout)}") from None
        ran = f"command {action.command!r} exited {_exit_text(done.returncode)}{output_tail(done.stdout)}"
        if done.returncode != 0:
            raise ReloadFailed(f"reload {ran}")
        return ran
    if action.signal:
        pid = read_pid_file(action.pid_file) if action.pid_file is not None else action.pid
        assert pid is not None
        try:
            os.kill(pid, action.signal)
        except OSError as exc:
            raise ReloadFailed(f"cannot send {action.signal.name} to pid {pid}: {exc.strerror}") from None
        return f"sent {action.signal.name} to pid {pid}"
    return "no reload action"


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"on signal {signal.Signals(-code).name}"
        except ValueError:
            return f"on signal {-code}"
    return str(code)


def output_tail(data: bytes | None) -> str:
    """``; output (last 2 lines): a | b`` or ``; no output``: what the command printed, for the log."""
    lines = [ln.strip() for ln in (data or b"").decode(errors="replace").splitlines() if ln.strip()]
    if not lines:
        return "; no output"
    tail = [ln if len(ln) <= OUTPUT_LINE_CHARS else ln[:OUTPUT_LINE_CHARS] + "..." for ln in lines[-OUTPUT_TAIL_LINES:]]
    return f"; output (last {len(tail)} of {len(lines)} lines): " + " | ".join(tail)


def reload_env(out_dir: Path, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The reload command's whole environment: ``RELOAD_ENV_KEPT`` plus TRUSTYARD_CERT_DIR."""
    source = os.environ if environ is None else environ
    env = {name: source[name] for name in RELOAD_ENV_KEPT if name in source}
    env.setdefault("PATH", os.defpath)
    env["TRUSTYARD_CERT_DIR"] = str(out_dir)
    return env


def read_pid_file(path: Path) -> int:
    """The pid in ``path``, refused unless the file is a regular file (not a link) owned by root
    or by the agent's user and writable by nobody else: whoever can write it chooses which
    process the agent signals."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ReloadFailed(f"pid file {path} is a symbolic link: refused; give the file itself") from None
        raise ReloadFailed(f"cannot read pid file {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ReloadFailed(f"pid file {path} is not a regular file: refused")
        me = os.geteuid()
        if info.st_uid not in (0, me):
            raise ReloadFailed(
                f"pid file {path} is owned by {_user(info.st_uid)}, not by root or by the agent's user "
                f"{_user(me)}: refused, its owner could make the agent signal any process. "
                f"Fix: chown root {path} (or let the service write it as {_user(me)})")
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise ReloadFailed(f"pid file {path} is writable by group or others (mode "
                               f"{stat.S_IMODE(info.st_mode):04o}): refused. Fix: chmod go-w {path}")
        data = os.read(fd, 64)
    finally:
        os.close(fd)
    try:
        return parse_pid(data.decode("ascii", errors="replace"))
    except ValueError as exc:
        raise ReloadFailed(f"pid file {path}: {exc}") from None


def _user(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


@dataclass(frozen=True)
class Probe:
    serial: int | None
    error: str | None = None


def served_serial(host: str, port: int, server_name: str | None, cert_file: Path | None = None,
                  key_file: Path | None = None, timeout: float = 5.0) -> Probe:
    """The serial of the certificate the endpoint presents now.

    Trust is not checked here (the agent only compares serials); the agent's own
    certificate is offered in case the service requires a client certificate.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # trustyard: allow-insecure the probe reads what the endpoint serves; the serial is compared, not trusted
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # trustyard: allow-insecure (as above)
    if cert_file is not None and key_file is not None:
        # a mismatched pair mid-rotation: probe without a client certificate
        with contextlib.suppress(OSError, ssl.SSLError):
            context.load_cert_chain(cert_file, key_file)
    try:
        with (socket.create_connection((host, port), timeout=timeout) as raw,
              context.wrap_socket(raw, server_hostname=server_name) as tls):
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as exc:
        return Probe(None, f"cannot connect to {host}:{port}: {exc}")
    if not der:
        return Probe(None, f"{host}:{port} presented no certificate")
    return Probe(x509.load_der_x509_certificate(der).serial_number)
