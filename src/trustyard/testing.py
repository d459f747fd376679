"""A certificate authority for tests, shaped like the one trustyard runs (as trustme is for public CAs).

    from trustyard.testing import TestCA

    ca = TestCA()                                  # root -> intermediate, EC P-256
    server = ca.issue("localhost", "127.0.0.1")    # a 24 h leaf signed by the intermediate
    server.write_agent_dir(tmp / "server")         # tls.crt (leaf + intermediate), tls.key 0600, ca.crt
    ctx = ssl.create_default_context(cadata=ca.pem().decode())

Broken certificates a client must refuse: ``ca.expired(...)``, ``ca.not_yet_valid(...)``, a leaf for another
name (``ca.issue("other.internal")``), a leaf from another ``TestCA()`` or ``self_signed(...)``; a longer chain
with ``TestCA(intermediates=2)`` or ``ca.child(...)``. ``free_port()`` and ``need(tool)`` serve tests that
run servers and external programs. Nothing here imports pytest at module level: unittest suites can use it.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from trustyard.files import write_atomic, write_private
from trustyard.x509 import keys, profiles
from trustyard.x509.names import Name as SanName
from trustyard.x509.names import parse_name
from trustyard.x509.selfsigned import self_signed_certificate

__all__ = ["Leaf", "TestCA", "free_port", "need", "pem", "self_signed"]

BACKDATE = dt.timedelta(minutes=5)  # leaves start a little in the past: clocks differ
SKIP_ENV = "TRUSTYARD_TESTING_ALLOW_SKIP"  # "1": a missing external program skips instead of failing

# Programs the test suite runs, by the Debian package that provides them (scripts/apt-packages.txt).
DEBIAN_PACKAGES = {
    "keytool": "default-jdk-headless", "java": "default-jdk-headless", "javac": "default-jdk-headless",
    "node": "nodejs", "cfssl": "golang-cfssl", "pebble-challtestsrv": "pebble",
    "initdb": "postgresql", "pg_ctl": "postgresql", "psql": "postgresql",
}

Name = str | x509.GeneralName


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(Encoding.PEM) for c in certs)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _names(names: Iterable[Name]) -> tuple[x509.GeneralName, ...]:
    """Strings as a person types them ("*.a.internal", "10.0.0.7", "spiffe://..."); GeneralNames as they are."""
    out: list[x509.GeneralName] = []
    for n in names:
        name = n if isinstance(n, x509.GeneralName) else parse_name(n)
        if name not in out:
            out.append(name)
    return tuple(out)


@dataclass
class Leaf:
    """An issued certificate with its key and the intermediates that lead to ``root``."""

    cert: x509.Certificate
    key: keys.PrivateKey
    chain: list[x509.Certificate] = field(default_factory=list)  # intermediates, nearest first; no root
    root: x509.Certificate | None = None  # the trust anchor; None for a self-signed leaf

    @property
    def serial(self) -> int:
        return self.cert.serial_number

    def cert_pem(self) -> bytes:
        return pem(self.cert)

    def chain_pem(self) -> bytes:
        """The leaf then its intermediates: what a server sends, and what tls.crt holds."""
        return pem(self.cert, *self.chain)

    def key_pem(self) -> bytes:
        return keys.private_key_pem(self.key)

    def write_pair(self, directory: Path, stem: str = "tls", *, chain: bool = True) -> tuple[Path, Path]:
        """``<stem>.crt`` (with the intermediates unless ``chain=False``) and ``<stem>.key`` (0600),
        each replaced atomically."""
        crt, key = Path(directory) / f"{stem}.crt", Path(directory) / f"{stem}.key"
        write_atomic(crt, self.chain_pem() if chain else self.cert_pem())
        write_private(key, self.key_pem())
        return crt, key

    def write_agent_dir(self, directory: Path, *, bundle: bytes | None = None) -> Path:
        """The layout ``trustyard agent`` writes: tls.crt (leaf + intermediates), tls.key (0600) and
        ca.crt (``bundle``, else this leaf's root). Returns ``directory``."""
        directory = Path(directory)
        self.write_pair(directory)
        if bundle is None:
            if self.root is None:
                raise ValueError("a self-signed leaf has no CA: pass bundle=")
            bundle = pem(self.root)
        write_atomic(directory / "ca.crt", bundle)
        return directory


class TestCA:
    """A root and ``intermediates`` intermediate CAs below it; leaves are signed by the last one.

    ``TestCA("Prod")`` makes "Prod Root" -> "Prod Intermediate"; ``intermediates=0`` signs leaves with
    the root, ``intermediates=2`` adds "Prod Intermediate 2". ``limits`` puts name constraints on the
    first intermediate. ``not_before`` and ``lifetime`` place the CA certificates in time (for tests
    that check at a fixed instant); ``intermediate_lifetime`` defaults to ``lifetime``.
    """

    __test__ = False  # not a pytest class

    def __init__(self, name: str = "Test", *, key_type: keys.KeyType = keys.KeyType.EC_P256,
                 intermediates: int = 1, not_before: dt.datetime | None = None,
                 lifetime: dt.timedelta = dt.timedelta(days=3650),
                 intermediate_lifetime: dt.timedelta | None = None,
                 limits: profiles.NameLimits | None = None) -> None:
        self.key_type = key_type
        self._start = not_before or _now() - dt.timedelta(days=1)
        self.root_key = keys.generate_private_key(key_type)
        self.root = profiles.sign(profiles.root_builder(
            self.root_key.public_key(), f"{name} Root", self._start, lifetime), self.root_key)
        self.intermediates: list[x509.Certificate] = []  # root-most first
        self.key, self.cert = self.root_key, self.root  # the issuing CA
        for i in range(intermediates):
            self._add_intermediate(f"{name} Intermediate" + (f" {i + 1}" if i else ""), self._start,
                                   intermediate_lifetime or lifetime, limits if i == 0 else None,
                                   path_length=intermediates - 1 - i)

    def _add_intermediate(self, common_name: str, not_before: dt.datetime, lifetime: dt.timedelta,
                          limits: profiles.NameLimits | None = None, path_length: int = 0) -> None:
        key = keys.generate_private_key(self.key_type)
        cert = profiles.sign(profiles.intermediate_builder(
            key.public_key(), self.cert, common_name, not_before, lifetime, limits=limits,
            path_length=path_length), self.key)
        self.intermediates.append(cert)
        self.key, self.cert = key, cert

    @property
    def chain(self) -> list[x509.Certificate]:
        """The intermediates a leaf of this CA is sent with, nearest first."""
        return self.intermediates[::-1]

    def child(self, name: str, *, not_before: dt.datetime | None = None,
              lifetime: dt.timedelta | None = None) -> TestCA:
        """A new intermediate signed by this CA's issuing certificate, with the same root (e.g. an expired
        intermediate). Below an intermediate (path length 0) it makes a chain verifiers must refuse."""
        sub = object.__new__(TestCA)
        sub.key_type, sub._start = self.key_type, self._start
        sub.root_key, sub.root = self.root_key, self.root
        sub.intermediates, sub.key, sub.cert = list(self.intermediates), self.key, self.cert
        sub._add_intermediate(name, not_before or self._start, lifetime or dt.timedelta(days=3650))
        return sub

    def pem(self) -> bytes:
        """The root certificate: what a client trusts."""
        return pem(self.root)

    def bundle(self, *others: TestCA) -> bytes:
        """A trust bundle (ca.crt): this root, then the roots of ``others`` (e.g. during a rotation)."""
        return pem(self.root, *(o.root for o in others))

    def intermediates_pem(self) -> bytes:
        return pem(*self.chain)

    def issue(self, *names: Name, ttl: dt.timedelta = dt.timedelta(hours=24), key_type: keys.KeyType | None = None,
              eku: tuple[str, ...] = ("serverAuth", "clientAuth"), not_before: dt.datetime | None = None,
              not_after: dt.datetime | None = None, cn: str | None = None,
              key: keys.PrivateKey | None = None) -> Leaf:
        """A leaf for ``names`` (DNS names, IPs, URIs as text, or GeneralNames) as trustyard issues them.

        It starts ``not_before`` (default: 5 minutes ago) and ends ``not_after`` (default: ``ttl`` after
        ``not_before`` when that is given, else ``ttl`` from now). With ``cn`` and no names it is the
        legacy CN-only shape modern clients refuse. ``key`` (any private key, e.g. a weak one) overrides
        ``key_type``.
        """
        private = key or keys.generate_private_key(key_type or self.key_type)
        start = not_before or _now() - BACKDATE
        end = not_after or (not_before or _now()) + ttl
        if names:
            # Any GeneralName goes in (a test may want a SAN type trustyard never issues).
            sans = cast(tuple[SanName, ...], _names(names))
            spec = profiles.LeafSpec(public_key=private.public_key(), names=sans, not_before=start,
                                     not_after=end, serial=profiles.new_serial(), eku=eku, common_name=cn)
            builder = profiles.leaf_builder(spec, self.cert)
        elif cn:
            builder = (x509.CertificateBuilder()
                       .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
                       .issuer_name(self.cert.subject).public_key(private.public_key())
                       .serial_number(profiles.new_serial()).not_valid_before(start).not_valid_after(end)
                       .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
        else:
            raise ValueError("issue() needs at least one name (or cn= for a CN-only certificate)")
        return Leaf(profiles.sign(builder, self.key), private, self.chain, self.root)

    def expired(self, *names: Name, ago: dt.timedelta = dt.timedelta(days=1), **kw: Any) -> Leaf:
        """A leaf that ended ``ago`` and lived 30 days before that."""
        end = _now() - ago
        return self.issue(*names, not_before=end - dt.timedelta(days=30), not_after=end, **kw)

    def not_yet_valid(self, *names: Name, starts_in: dt.timedelta = dt.timedelta(days=2), **kw: Any) -> Leaf:
        """A leaf whose validity starts ``starts_in`` from now and lasts 30 days."""
        start = _now() + starts_in
        return self.issue(*names, not_before=start, not_after=start + dt.timedelta(days=30), **kw)


def self_signed(*names: str, cn: str | None = None, ttl: dt.timedelta = dt.timedelta(days=365),
                key: keys.PrivateKey | None = None, is_ca: bool = False,
                algorithm: hashes.HashAlgorithm | None = None) -> Leaf:
    """The certificate trustyard replaces: its own issuer, CN ``cn`` (default: the first name)."""
    cert, private = self_signed_certificate(list(names), _now(), cn=cn, ttl=ttl, key=key, is_ca=is_ca,
                                            algorithm=algorithm)
    return Leaf(cert, private)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on at this moment (the OS picks; another process may take it later)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def need(tool: str, package: str | None = None) -> str:
    """The path of an external program a test runs. A missing one fails the test, naming the Debian
    package to install (CI installs them all: a skip would hide a test that never ran); with
    TRUSTYARD_TESTING_ALLOW_SKIP=1 it skips instead (a laptop without a JDK)."""
    path = shutil.which(tool)
    if path is not None:
        return path
    message = (f"{tool} is not installed: apt-get install {package or DEBIAN_PACKAGES.get(tool, tool)} "
               f"(scripts/apt-packages.txt; {SKIP_ENV}=1 skips instead)")
    pytest = sys.modules.get("pytest")
    if os.environ.get(SKIP_ENV) == "1":
        if pytest is not None:
            pytest.skip(message)
        import unittest

        raise unittest.SkipTest(message)
    if pytest is not None:
        pytest.fail(message, pytrace=False)
    raise AssertionError(message)
