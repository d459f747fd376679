"""A small CA for TLS tests: root -> intermediate -> leaves, written the way the agent does."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from trustyard.files import write_atomic, write_private
from trustyard.x509 import keys, profiles
from trustyard.x509.names import parse_name, parse_names


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.PEM)


@dataclass
class Leaf:
    cert: x509.Certificate
    key: keys.PrivateKey
    chain: list[x509.Certificate]

    @property
    def serial(self) -> int:
        return self.cert.serial_number

    def chain_pem(self) -> bytes:
        return b"".join(_pem(c) for c in [self.cert, *self.chain])

    def key_pem(self) -> bytes:
        return keys.private_key_pem(self.key)


class TestCA:
    __test__ = False

    def __init__(self, name: str = "Test", key_type: keys.KeyType = keys.KeyType.EC_P256) -> None:
        self.now = dt.datetime.now(dt.UTC)
        self.key_type = key_type
        root_key = keys.generate_private_key(key_type)
        self.root = profiles.sign(profiles.root_builder(
            root_key.public_key(), f"{name} Root", self.now - dt.timedelta(hours=1), dt.timedelta(days=30)), root_key)
        self.int_key = keys.generate_private_key(key_type)
        self.intermediate = profiles.sign(profiles.intermediate_builder(
            self.int_key.public_key(), self.root, f"{name} Intermediate", self.now - dt.timedelta(hours=1),
            dt.timedelta(days=10)), root_key)

    def bundle_pem(self) -> bytes:
        return _pem(self.root)

    def issue(self, *names: str | x509.GeneralName, eku: tuple[str, ...] = ("serverAuth", "clientAuth"),
              lifetime: dt.timedelta = dt.timedelta(hours=1)) -> Leaf:
        key = keys.generate_private_key(self.key_type)
        spec = profiles.LeafSpec(
            public_key=key.public_key(),
            # Strings as a person types them; GeneralNames as they are (e.g. a URI SAN without "://").
            names=tuple(n if isinstance(n, x509.GeneralName) else parse_name(n) for n in names),
            not_before=self.now - dt.timedelta(minutes=5), not_after=self.now + lifetime,
            serial=profiles.new_serial(), eku=eku,
        )
        cert = profiles.sign(profiles.leaf_builder(spec, self.intermediate), self.int_key)
        return Leaf(cert, key, [self.intermediate])

    def write(self, directory: Path, leaf: Leaf, bundle: bytes | None = None) -> Path:
        """Agent layout: tls.crt (leaf + intermediate), tls.key (0600), ca.crt."""
        write_atomic(directory / "tls.crt", leaf.chain_pem())
        write_private(directory / "tls.key", leaf.key_pem())
        write_atomic(directory / "ca.crt", bundle if bundle is not None else self.bundle_pem())
        return directory


def self_signed(*names: str) -> Leaf:
    key = keys.generate_private_key(keys.KeyType.EC_P256)
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, names[0])])
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(profiles.new_serial())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName(parse_names(names)), critical=False)
        .sign(key, keys.signature_hash(key))  # type: ignore[arg-type]
    )
    return Leaf(cert, key, [])
