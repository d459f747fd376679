"""Side effects on the managed service: the reload action and the live-endpoint probe."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from .config import ReloadAction

RELOAD_TIMEOUT_SECONDS = 60


class ReloadFailed(Exception):
    pass


def run_reload(action: ReloadAction, out_dir: Path) -> str:
    """Run the action; returns what was done. Raises ``ReloadFailed`` with the reason."""
    if action.command:
        env = {**os.environ, "TRUSTYARD_CERT_DIR": str(out_dir)}
        try:
            done = subprocess.run(action.command, shell=True, env=env, capture_output=True,  # noqa: S602 - operator's command
                                  timeout=RELOAD_TIMEOUT_SECONDS, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise ReloadFailed(f"reload command timed out after {RELOAD_TIMEOUT_SECONDS}s: {action.command}") from None
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).decode(errors="replace").strip()[-300:]
            raise ReloadFailed(f"reload command exited {done.returncode}: {action.command}: {tail}")
        return f"ran {action.command!r}"
    if action.signal:
        pid = action.pid
        if action.pid_file is not None:
            try:
                pid = int(action.pid_file.read_text().split()[0])
            except (OSError, ValueError, IndexError) as exc:
                raise ReloadFailed(f"cannot read a pid from {action.pid_file}: {exc}") from None
        assert pid is not None
        try:
            os.kill(pid, action.signal)
        except OSError as exc:
            raise ReloadFailed(f"cannot send {action.signal.name} to pid {pid}: {exc.strerror}") from None
        return f"sent {action.signal.name} to pid {pid}"
    return "no reload action"


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
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if cert_file is not None and key_file is not None:
        try:
            context.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError):
            pass  # a mismatched pair mid-rotation: probe without a client certificate
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=server_name) as tls:
                der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as exc:
        return Probe(None, f"cannot connect to {host}:{port}: {exc}")
    if not der:
        return Probe(None, f"{host}:{port} presented no certificate")
    return Probe(x509.load_der_x509_certificate(der).serial_number)
