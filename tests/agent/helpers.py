"""Helpers for the agent tests: a CA with short lifetimes that can be stopped and started on
the same port (an outage), bootstrap tokens, agent processes, and waiting on conditions."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import tomli_w
from cryptography import x509

from trustyard.ca.home import InitOptions, init_home, load_authority
from trustyard.units import parse_duration

from ..support import PASSWORD, Server, start_server

T = TypeVar("T")
ALLOW = ("*.internal", "127.0.0.1/32", "spiffe://prod.internal/*")


def short_ttl_home(home: Path, min_ttl: str = "10s", default_ttl: str = "60s") -> Path:
    """A CA home whose provisioner allows certificates of seconds (the default minimum is 5m)."""
    init_home(home, PASSWORD, InitOptions(allow=ALLOW))
    path = home / "trustyard.toml"
    doc = tomllib.loads(path.read_text())
    for prov in doc["provisioners"]:
        prov["min_ttl"], prov["default_ttl"] = min_ttl, default_ttl
    path.write_text(tomli_w.dumps(doc))
    return home


def serve(home: Path, port: int | None = None) -> Server:
    """``trustyard serve`` with one worker on ``port`` (a free one when None), once healthy."""
    return start_server(home, workers=1, port=port)


def mint(home: Path, name: str, *sans: str, cert_ttl: str | None = None) -> str:
    authority = load_authority(home, PASSWORD, minting=True)
    try:
        return authority.mint_token("default", name, list(sans) or [name], ttl=timedelta(minutes=10),
                                    cert_ttl=parse_duration(cert_ttl) if cert_ttl else None)
    finally:
        authority.store.close()


def wait_for(condition: Callable[[], T], timeout: float = 30, interval: float = 0.1, what: str = "") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


def leaf(directory: Path) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificates((directory / "tls.crt").read_bytes())[0]
    except (OSError, ValueError):
        return None


def serial_of(directory: Path) -> int | None:
    cert = leaf(directory)
    return cert.serial_number if cert else None


class AgentProcess:
    """``trustyard agent`` as a real process, its stderr in a log file."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        with log.open("wb") as fh:
            self.process = subprocess.Popen([sys.executable, "-m", "trustyard", "agent", *args], stdout=fh,
                                            stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                            start_new_session=True)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = 15, timeout: float = 20) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait(5)
        return self.process.returncode


def agent_args(server: Server, out: Path, name: str, token_file: Path, *extra: str) -> list[str]:
    return ["--name", name, "--token-file", str(token_file), "--ca-url", server.url, "--root", str(server.root),
            "--out", str(out), *extra]
