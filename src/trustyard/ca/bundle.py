"""What is in the trust bundle, and which version it is: the one place that says so.

The bundle is composed from the CA's roots (``ca/roots.pem`` in the home, else the root
certificate); work that publishes more trust material (a root rotation's next root) adds it in
``compose`` and then calls ``refresh``. ``init`` and ``serve`` (once, before its workers) call it
too; the workers only serve the newest version (``ensure``, ``Current``). Every distinct
composed bundle gets the next version number in the database (``store/bundles.py``), so
versions only grow, survive restarts and are the same on every replica: the first to publish
a content claims its number, the others find it there. The SHA-256 is that of the exact PEM
bytes ``GET /v1/roots`` serves.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cryptography import x509

from ..errors import ConfigError
from ..files import write_atomic
from ..x509.summary import fingerprint_sha256, load_pem_bundle, pem_bundle
from .config import Config

if TYPE_CHECKING:  # the table's module imports SQLAlchemy: not for `token` and `list --home` (roots_of)
    from ..store import bundles
    from ..store.engine import Database

ROOTS_FILE = "ca/roots.pem"


@dataclass(frozen=True)
class Bundle:
    version: int
    sha256: str
    pem: str
    certificates: tuple[x509.Certificate, ...] = field(compare=False, repr=False)

    @property
    def etag(self) -> str:
        return f'"{self.sha256}"'


def digest(pem: str) -> str:
    return hashlib.sha256(pem.encode()).hexdigest()


def compose(roots: Iterable[x509.Certificate]) -> str:
    """The bundle's PEM text: each certificate once, in the order given."""
    seen, kept = set(), []
    for cert in roots:
        fp = fingerprint_sha256(cert)
        if fp not in seen:
            seen.add(fp)
            kept.append(cert)
    if not kept:
        raise ConfigError("the trust bundle would be empty")
    return pem_bundle(kept)


def roots_of(config: Config) -> list[x509.Certificate]:
    """The CA's roots as the home has them: ``ca/roots.pem``, else the root certificate."""
    relative = ROOTS_FILE if config.path(ROOTS_FILE).exists() else config.root_cert
    path = config.path(relative)
    try:
        return load_pem_bundle(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read certificates from {path}: {exc}") from None


def publish(db: Database, roots: Sequence[x509.Certificate]) -> Bundle:
    """Record the bundle of ``roots`` (a new version when it differs from the newest) and return it."""
    from ..store import bundles

    pem = compose(roots)
    row = bundles.record(db, digest(pem), pem)
    return _bundle(row)


def ensure(db: Database, roots: Sequence[x509.Certificate]) -> Bundle:
    """The newest published bundle; ``roots`` are published only when there is none yet. What a
    server worker calls at start: a worker that loaded the home before a publication must not
    publish its older roots over the newer bundle (``serve`` refreshes once, before its workers)."""
    current = latest(db)
    return current if current is not None else publish(db, roots)


def refresh(config: Config, db: Database) -> Bundle:
    """Compose the bundle from the home and publish it: call after changing what is published."""
    return publish(db, roots_of(config))


def add_root(config: Config, db: Database, cert: x509.Certificate) -> Bundle:
    """Add ``cert`` to the home's roots (``ca/roots.pem``) and publish the new bundle."""
    roots = roots_of(config)
    if all(fingerprint_sha256(c) != fingerprint_sha256(cert) for c in roots):
        write_atomic(config.path(ROOTS_FILE), compose([*roots, cert]))
    return refresh(config, db)


def latest(db: Database) -> Bundle | None:
    from ..store import bundles

    row = bundles.latest(db)
    return _bundle(row) if row is not None else None


class Current:
    """The newest published bundle for a server, read from the database at most every ``ttl``
    seconds: what another replica (or ``refresh``) published is served within that time."""

    def __init__(self, db: Database, first: Bundle, ttl: float = 1.0) -> None:
        self.db, self.ttl = db, ttl
        self._bundle, self._read_at = first, time.monotonic()
        self._lock = threading.Lock()

    def cached(self) -> Bundle | None:
        """The bundle when it was read less than ``ttl`` ago, else None (then ``load``)."""
        return self._bundle if time.monotonic() - self._read_at < self.ttl else None

    def load(self) -> Bundle:
        with self._lock:
            if time.monotonic() - self._read_at >= self.ttl:
                from ..store import bundles

                row = bundles.latest(self.db)
                if row is not None and row.version != self._bundle.version:
                    self._bundle = _bundle(row)
                self._read_at = time.monotonic()
            return self._bundle


def _bundle(row: bundles.BundleRow) -> Bundle:
    return Bundle(row.version, row.sha256, row.pem, tuple(load_pem_bundle(row.pem.encode())))
