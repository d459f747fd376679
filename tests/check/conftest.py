from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from trustyard.x509 import keys, profiles
from trustyard.x509.names import parse_names

NOW = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)  # for validate(now=NOW)
CA_START = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)  # the CA spans NOW and the real clock


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(Encoding.PEM) for c in certs)


@dataclass
class Files:
    cert: Path
    key: Path
    ca: Path
    leaf: x509.Certificate

    def args(self) -> list[str]:
        return ["--cert", str(self.cert), "--key", str(self.key), "--ca", str(self.ca)]


class MiniCA:
    """Root -> intermediate, any key type, optional name constraints on the intermediate."""

    def __init__(self, key_type: keys.KeyType = keys.KeyType.EC_P256,
                 limits: profiles.NameLimits | None = None) -> None:
        self.key_type = key_type
        self.root_key = keys.generate_private_key(key_type)
        self.root = profiles.sign(profiles.root_builder(
            self.root_key.public_key(), "Check Root", CA_START, dt.timedelta(days=7300)),
            self.root_key)
        self.int_key = keys.generate_private_key(key_type)
        self.intermediate = profiles.sign(profiles.intermediate_builder(
            self.int_key.public_key(), self.root, "Check Intermediate", CA_START,
            dt.timedelta(days=7000), limits=limits), self.root_key)

    def leaf(self, *names: str, eku: tuple[str, ...] = ("serverAuth", "clientAuth"),
             not_before: dt.datetime = NOW - dt.timedelta(hours=1),
             lifetime: dt.timedelta = dt.timedelta(hours=24),
             key: keys.PrivateKey | None = None) -> tuple[x509.Certificate, keys.PrivateKey]:
        key = key or keys.generate_private_key(self.key_type)
        spec = profiles.LeafSpec(key.public_key(), tuple(parse_names(names or ("orders.internal",))),
                                 not_before, not_before + lifetime, profiles.new_serial(), eku=eku)
        return profiles.sign(profiles.leaf_builder(spec, self.intermediate), self.int_key), key


@pytest.fixture(scope="session")
def mini_ca() -> MiniCA:
    return MiniCA()


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., Files]:
    """write(leaf, key, chain=[...], bundle=[...]) -> paths laid out like an agent's output."""
    counter = iter(range(1000))

    def _write(leaf: x509.Certificate, key: keys.PrivateKey, chain: list[x509.Certificate],
               bundle: list[x509.Certificate]) -> Files:
        d = tmp_path / f"out{next(counter)}"
        d.mkdir()
        (d / "tls.crt").write_bytes(pem(leaf, *chain))
        (d / "tls.key").write_bytes(keys.private_key_pem(key))
        (d / "ca.crt").write_bytes(pem(*bundle))
        return Files(d / "tls.crt", d / "tls.key", d / "ca.crt", leaf)

    return _write


@pytest.fixture
def healthy(mini_ca: MiniCA, write: Callable[..., Files]) -> Files:
    leaf, key = mini_ca.leaf("orders.internal", "10.0.0.7", "spiffe://prod.internal/orders")
    return write(leaf, key, [mini_ca.intermediate], [mini_ca.root])
