"""A small self-signed estate on loopback: one HTTPS server that re-reads its files on every
connection, and its certificate copied into a PEM bundle, a JKS (made by keytool), a PKCS#12
truststore, a Kubernetes Secret manifest and a ConfigMap beside a Deployment."""

from __future__ import annotations

import base64
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12

from trustyard.testing import TestCA, free_port, need, self_signed

NAME = "svc.internal"
JKS_PASSWORD = "jks-secret-1"


@dataclass
class Estate:
    root: Path
    server_dir: Path
    cert: Path
    key: Path
    bundle: Path
    jks: Path
    p12: Path
    secret: Path
    jks_password_file: Path
    configmap: Path
    port: int = 0
    # SNI name -> (certificate, key) the server keeps serving for that name: a virtual host left behind
    pinned: dict[str, tuple[Path, Path]] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}/{NAME}"

    def files(self) -> dict[str, bytes]:
        return {str(p): p.read_bytes() for p in (self.cert, self.key, *self.clients)}

    @property
    def clients(self) -> tuple[Path, ...]:
        return (self.bundle, self.jks, self.p12, self.secret, self.configmap)


def make_estate(root: Path, names: tuple[str, ...] = (NAME,)) -> Estate:
    leaf = self_signed(*names)
    other = TestCA("Unrelated").issue("other.internal")  # another entry every location keeps
    server_dir = root / "server"
    server_dir.mkdir(parents=True)
    cert, key = leaf.write_pair(server_dir, "server", chain=False)
    clients = root / "clients"
    clients.mkdir()
    bundle = clients / "ca-bundle.pem"
    bundle.write_bytes(other.cert_pem() + leaf.cert_pem())
    # JKS by keytool: the self-signed copy and an unrelated entry
    jks = clients / "truststore.jks"
    keytool = need("keytool", package="default-jdk-headless")
    for alias, blob in (("svc", leaf.cert_pem()), ("other", other.cert_pem())):
        src = clients / f".{alias}.pem"
        src.write_bytes(blob)
        subprocess.run([keytool, "-importcert", "-noprompt", "-storetype", "JKS", "-keystore", str(jks),
                        "-storepass", JKS_PASSWORD, "-alias", alias, "-file", str(src)],
                       check=True, capture_output=True, timeout=60)
        src.unlink()
    pw = root / "jks.pw"
    pw.write_text(JKS_PASSWORD + "\n")
    p12 = clients / "truststore.p12"
    p12.write_bytes(pkcs12.serialize_java_truststore(
        [pkcs12.PKCS12Certificate(leaf.cert, b"svc"), pkcs12.PKCS12Certificate(other.cert, b"other")],
        BestAvailableEncryption(b"changeit")))
    k8s = root / "k8s"
    k8s.mkdir()
    secret = k8s / "client-secret.yaml"
    secret.write_text(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: client-trust\n  namespace: shop\ntype: Opaque\ndata:\n"
        f"  ca.crt: {base64.b64encode(leaf.cert_pem()).decode()}\n"
        f"  api-token: {base64.b64encode(b'hunter2').decode()}\n")
    configmap = k8s / "app.yaml"  # two documents: a Deployment, then the ConfigMap the client reads
    block = "".join(f"    {line}\n" for line in leaf.cert_pem().decode().splitlines())
    configmap.write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: shop\n  namespace: shop\nspec:\n  replicas: 2\n"
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: shop-trust\n  namespace: shop\ndata:\n"
        f"  ca.crt: |\n{block}  mode: strict\n")
    return Estate(root, server_dir, cert, key, bundle, jks, p12, secret, pw, configmap)


class Reloader:
    """The files a server loaded, and the operator's hand that makes it load them again."""

    def __init__(self, estate: Estate, every_connection: bool) -> None:
        self.estate, self.every_connection = estate, every_connection
        self.ctx = self._load()

    def _load(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.estate.cert, self.estate.key)
        if self.estate.pinned:
            others = {}
            for name, (cert, key) in self.estate.pinned.items():
                others[name] = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                others[name].load_cert_chain(cert, key)

            def pick(tls: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
                if name in others:
                    tls.context = others[name]

            ctx.sni_callback = pick
        return ctx

    @property
    def flag(self) -> Path:
        """Touching this file asks the server to reload (what a reload command does)."""
        return self.estate.root / "reload-now"

    def context(self) -> ssl.SSLContext:
        if self.flag.exists():
            self.flag.unlink()
            self.reload()
        return self._load() if self.every_connection else self.ctx

    def reload(self) -> None:
        self.ctx = self._load()


@contextmanager
def https_server(estate: Estate, reload_every_connection: bool = True) -> Iterator[Reloader]:
    """A TLS server on 127.0.0.1 serving server.crt and server.key: loaded afresh for each
    connection, or (``reload_every_connection=False``) only when the test calls ``reload()``,
    as an operator reloads a server; it answers one line and closes."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    port = free_port()
    listener.bind(("127.0.0.1", port))
    listener.listen(16)
    listener.settimeout(0.2)
    estate.port = port
    loaded = Reloader(estate, reload_every_connection)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=one, args=(conn,), daemon=True).start()

    def one(conn: socket.socket) -> None:
        try:
            ctx = loaded.context()
            conn.settimeout(5)
            with ctx.wrap_socket(conn, server_side=True) as tls:
                with suppress(OSError, ssl.SSLError):
                    tls.recv(1024)
                tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield loaded
    finally:
        stop.set()
        listener.close()
        thread.join(timeout=5)
