from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from trustyard.testing import TestCA
from trustyard.x509 import keys, profiles

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


def check_ca(key_type: keys.KeyType = keys.KeyType.EC_P256, limits: profiles.NameLimits | None = None) -> TestCA:
    """Root -> intermediate, any key type, optional name constraints on the intermediate."""
    return TestCA("Check", key_type=key_type, not_before=CA_START, lifetime=dt.timedelta(days=7300),
                  intermediate_lifetime=dt.timedelta(days=7000), limits=limits)


def leaf_of(ca: TestCA, *names: str, not_before: dt.datetime = NOW - dt.timedelta(hours=1),
            ttl: dt.timedelta = dt.timedelta(hours=24), **kw: Any) -> tuple[x509.Certificate, keys.PrivateKey]:
    """A leaf valid around NOW (24 h from an hour before it): the certificate and its key."""
    issued = ca.issue(*names, not_before=not_before, ttl=ttl, **kw)
    return issued.cert, issued.key


@pytest.fixture(scope="session")
def mini_ca() -> TestCA:
    return check_ca()


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
def healthy(mini_ca: TestCA, write: Callable[..., Files]) -> Files:
    leaf, key = leaf_of(mini_ca, "orders.internal", "10.0.0.7", "spiffe://prod.internal/orders")
    return write(leaf, key, [mini_ca.cert], [mini_ca.root])
