"""Test helpers any test can use in one line: a CA home, CSRs, a running server, PostgreSQL."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from trustyard.testing import free_port
from trustyard.x509.keys import KeyType, PrivateKey, generate_private_key, signature_hash
from trustyard.x509.names import parse_name

PASSWORD = b"fixture-password-not-a-secret"


def csr_pem(key: PrivateKey, names: list[x509.GeneralName] | None = None, *, ca: bool = False,
            cn: str | None = None, extensions: list[x509.ExtensionType] | None = None) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, cn)]) if cn else x509.Name([]))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    for ext in extensions or []:
        builder = builder.add_extension(ext, critical=False)
    return builder.sign(key, signature_hash(key)).public_bytes(Encoding.PEM)  # type: ignore[arg-type]


def new_csr(*names: str, key_type: KeyType = KeyType.EC_P256) -> tuple[PrivateKey, bytes]:
    key = generate_private_key(key_type)
    return key, csr_pem(key, [parse_name(n) for n in names])


# -- a real server -------------------------------------------------------------------------------

class Server:
    def __init__(self, home: Path, port: int, process: subprocess.Popen[bytes], log: Path) -> None:
        self.home, self.port, self.process, self.log = home, port, process, log
        self.url = f"https://127.0.0.1:{port}"
        self.root = home / "ca" / "root.crt"

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=str_ctx(self.root), timeout=30)

    def stop(self, sig: int | None = None) -> None:
        if self.process.poll() is None:
            if sig is None:
                self.process.terminate()
            else:
                os.killpg(self.process.pid, sig)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait(5)


def str_ctx(root: Path):  # type: ignore[no-untyped-def]
    import ssl

    return ssl.create_default_context(cafile=str(root))


def start_server(home: Path, workers: int = 1, env: dict[str, str] | None = None, port: int | None = None) -> Server:
    """``trustyard serve`` on ``port`` (a free one when None); returns once it is healthy."""
    port = port or free_port()
    log = home / f"serve-{port}-{time.monotonic_ns()}.log"
    environment = {**os.environ, "TRUSTYARD_PASSWORD": PASSWORD.decode(), **(env or {})}
    with log.open("wb") as log_file:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", "trustyard", "serve", "--home", str(home), "--listen", f"127.0.0.1:{port}",
             "--workers", str(workers), "--log-level", "warning"],
            stdout=log_file, stderr=subprocess.STDOUT, env=environment, start_new_session=True,
        )
    server = Server(home, port, process, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited {process.returncode}:\n{log.read_text()}")
        try:
            with server.client() as c:
                if c.get("/healthz").status_code == 200:
                    return server
        except httpx.HTTPError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"server did not become healthy:\n{log.read_text()}")


# -- a throwaway PostgreSQL ----------------------------------------------------------------------

def postgres_bindir() -> Path | None:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            return candidate
    return None


class PostgresServer:
    """A throwaway cluster started by ``postgres_server``: its base ``url``, and ``restart``."""

    def __init__(self, bindir: Path, data: Path, log: Path, options: str, as_user: list[str], url: str) -> None:
        self.bindir, self.data, self.log, self.options, self.as_user, self.url = \
            bindir, data, log, options, as_user, url

    def pg_ctl(self, *args: str) -> None:
        subprocess.run([*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.data), *args],
                       check=True, capture_output=True)

    def start(self) -> None:
        self.pg_ctl("-l", str(self.log), "-w", "-t", "60", "-o", self.options, "start")

    def restart(self, mode: str = "immediate") -> None:
        """Stop (``immediate``: as a crash would, every connection cut) and start again."""
        self.pg_ctl("-m", mode, "-w", "stop")
        self.start()


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """initdb + pg_ctl in a temp dir on a free port, as a non-root user."""
    bindir = postgres_bindir()
    if bindir is None:
        raise RuntimeError("PostgreSQL binaries not found (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="trustyard-pg-"))
    data = root / "data"
    port = free_port()
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    server = PostgresServer(bindir, data, root / "log", f"-p {port} -k {root} -h 127.0.0.1 -c fsync=off "
                            "-c max_connections=200", as_user, f"postgresql://postgres@127.0.0.1:{port}")
    try:
        subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                        "--no-sync", "-E", "UTF8"], check=True, capture_output=True)
        server.start()
        yield server
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def postgres_cluster() -> Iterator[str]:
    """initdb + pg_ctl in a temp dir on a free port, as a non-root user; yields a base URL."""
    with postgres_server() as server:
        yield server.url


def create_database(base_url: str, name: str) -> str:
    import psycopg

    with psycopg.connect(base_url + "/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{base_url}/{name}"


@contextmanager
def internal_ca_server(base: Path) -> Iterator[Server]:
    """A CA for ``*.internal`` made in ``base/ca`` and served on loopback by one worker."""
    from trustyard.ca.home import InitOptions, init_home

    init_home(base / "ca", PASSWORD, InitOptions(allow=("*.internal",)))
    served = start_server(base / "ca", workers=1)
    try:
        yield served
    finally:
        served.stop()


def run_cli(*args: str) -> tuple[int, str, str]:
    """The CLI in-process with the fixture password: (exit code, stdout, stderr)."""
    from click.testing import CliRunner

    from trustyard.cli import cli

    result = CliRunner().invoke(cli, list(args), env={"TRUSTYARD_PASSWORD": PASSWORD.decode()})
    return result.exit_code, result.stdout, result.stderr
