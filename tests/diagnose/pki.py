"""A small CA for tests, and TLS servers on loopback that serve what a scenario needs.

Both test directories use it (tests/inventory imports it by path), so it lives in one place.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import formatdate
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from trustyard.x509 import profiles
from trustyard.x509.keys import KeyType, generate_private_key, private_key_pem
from trustyard.x509.names import parse_names

NOW = datetime.now(timezone.utc).replace(microsecond=0)
DAY = timedelta(days=1)


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.PEM)


@dataclass
class Leaf:
    cert: x509.Certificate
    key: object
    chain: list[x509.Certificate] = field(default_factory=list)  # intermediates, no root

    def write(self, directory: Path, stem: str = "tls", *, chain: bool = True) -> tuple[Path, Path]:
        directory.mkdir(parents=True, exist_ok=True)
        crt, key = directory / f"{stem}.crt", directory / f"{stem}.key"
        crt.write_bytes(pem(self.cert) + (b"".join(pem(c) for c in self.chain) if chain else b""))
        key.write_bytes(private_key_pem(self.key))  # type: ignore[arg-type]
        key.chmod(0o600)
        return crt, key


class TestCA:
    __test__ = False  # not a pytest class

    def __init__(self, name: str = "Test Root", *, parent: "TestCA | None" = None,
                 not_before: datetime | None = None, lifetime: timedelta = 3650 * DAY) -> None:
        self.key = generate_private_key(KeyType.EC_P256)
        start = not_before or NOW - DAY
        if parent is None:
            builder = profiles.root_builder(self.key.public_key(), name, start, lifetime)
            self.cert = profiles.sign(builder, self.key)
            self.chain: list[x509.Certificate] = []
        else:
            builder = profiles.intermediate_builder(self.key.public_key(), parent.cert, name, start, lifetime)
            self.cert = profiles.sign(builder, parent.key)
            self.chain = [self.cert, *parent.chain]
        self.root = parent.root if parent else self.cert

    def intermediate(self, name: str = "Test Intermediate", **kw: object) -> "TestCA":
        return TestCA(name, parent=self, **kw)  # type: ignore[arg-type]

    def leaf(self, *names: str, cn: str | None = None, not_before: datetime | None = None,
             not_after: datetime | None = None, key: object = None) -> Leaf:
        key = key or generate_private_key(KeyType.EC_P256)
        start = not_before or NOW - DAY
        end = not_after or start + 30 * DAY
        if names:
            spec = profiles.LeafSpec(public_key=key.public_key(), names=tuple(parse_names(names)),  # type: ignore[attr-defined]
                                     not_before=start, not_after=end, serial=profiles.new_serial(), common_name=cn)
            builder = profiles.leaf_builder(spec, self.cert)
        else:  # CN only: the legacy shape modern clients refuse
            builder = (x509.CertificateBuilder()
                       .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn or "localhost")]))
                       .issuer_name(self.cert.subject).public_key(key.public_key())  # type: ignore[attr-defined]
                       .serial_number(profiles.new_serial()).not_valid_before(start).not_valid_after(end)
                       .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
        return Leaf(profiles.sign(builder, self.key), key, list(self.chain))

    def pem(self) -> bytes:
        return pem(self.cert)

    def write_bundle(self, path: Path) -> Path:
        path.write_bytes(pem(self.root))
        return path


def self_signed(*names: str, cn: str = "self", days: int = 365, key: object = None, is_ca: bool = False,
                algorithm: hashes.HashAlgorithm | None = None) -> Leaf:
    key = key or generate_private_key(KeyType.EC_P256)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
               .public_key(key.public_key()).serial_number(profiles.new_serial())  # type: ignore[attr-defined]
               .not_valid_before(NOW - DAY).not_valid_after(NOW - DAY + days * DAY)
               .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(parse_names(names)), critical=False)
    algo = algorithm or (None if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey))
                         else hashes.SHA256())
    return Leaf(builder.sign(key, algo), key)  # type: ignore[arg-type]


def weak_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)


class Server:
    """A TLS (or plain) server on 127.0.0.1 in a thread, answering HTTP with a Date header."""

    def __init__(self, *, cert: Path | None = None, key: Path | None = None, client_ca: Path | None = None,
                 plain: bool = False, date: datetime | None = None,
                 versions: tuple[ssl.TLSVersion, ssl.TLSVersion] | None = None, ciphers: str | None = None) -> None:
        """``versions`` (minimum, maximum) and ``ciphers`` (an OpenSSL cipher string) make a
        server that only speaks what a given client will not."""
        self.date = date
        self.ctx: ssl.SSLContext | None = None
        if not plain:
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            if ciphers:
                self.ctx.set_ciphers(ciphers)
            if versions:
                with warnings.catch_warnings():  # a legacy-only server is the point (TLS 1.0/1.1)
                    warnings.simplefilter("ignore", DeprecationWarning)
                    self.ctx.minimum_version, self.ctx.maximum_version = versions
            self.ctx.load_cert_chain(str(cert), str(key))
            if client_ca:
                self.ctx.verify_mode = ssl.CERT_REQUIRED
                self.ctx.load_verify_locations(str(client_ca))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        try:
            if self.ctx is not None:
                tls = self.ctx.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
                try:
                    tls.do_handshake()
                    # TLS 1.3 checks the client certificate only now: read to let it fail
                    data = tls.recv(4096)
                except (ssl.SSLError, OSError):
                    self._linger(tls)
                    return
                conn = tls
            else:
                data = conn.recv(4096)
            # Like a strict HTTP server: answer garbage (a TLS ClientHello) at once with a 400.
            while self.ctx is not None and b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            ok = self.ctx is not None or data.startswith((b"GET ", b"HEAD "))
            date = formatdate((self.date or datetime.now(timezone.utc)).timestamp(), usegmt=True)
            conn.sendall(f"HTTP/1.1 {'200 OK' if ok else '400 Bad Request'}\r\nDate: {date}\r\n"
                         "Content-Length: 3\r\nConnection: close\r\n\r\nok\n".encode())
        except (OSError, ssl.SSLError):
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass

    @staticmethod
    def _linger(tls: ssl.SSLSocket) -> None:
        """After a failed handshake, half-close and drain: closing with unread data sends a
        reset, which can destroy the alert before the client reads it."""
        try:
            tls.shutdown(socket.SHUT_WR)
            tls.settimeout(1)
            while tls.recv(4096):
                pass
        except (OSError, ValueError):
            pass
        finally:
            tls.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)
