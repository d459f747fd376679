"""Plain implementations of the journal's ``FleetView`` and ``BundleSource`` (``ca/rotation.py``).

``HomeBundle`` keeps the trust bundle the CA serves (``ca/roots.pem``) and a version counter
beside it (``ca/bundle.version``); ``MemoryFleet`` is a fleet whose parties are told, for
tests and for a CA whose relying parties do not check in (none then gates adoption but the
dwell). The fleet registry and the database-backed bundle plug in here in their place.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509

from ..files import write_atomic
from ..x509.summary import fingerprint_sha256, load_pem_bundle, pem_bundle
from .rotation import Party

VERSION_FILE = "bundle.version"


class HomeBundle:
    """The bundle file and its version: every publish or withdraw rewrites both (atomically,
    the bundle first, so a reader never sees a version whose material is not yet there)."""

    def __init__(self, bundle: Path) -> None:
        self.path = bundle
        self.version_path = bundle.with_name(VERSION_FILE)
        self._lock = threading.Lock()

    def certificates(self) -> list[x509.Certificate]:
        return load_pem_bundle(self.path.read_bytes()) if self.path.exists() else []

    def version(self) -> int:
        try:
            return int(self.version_path.read_text().strip() or 0)
        except (OSError, ValueError):
            return 0

    def publish(self, certs: Sequence[x509.Certificate], reason: str) -> int:
        with self._lock:
            current = self.certificates()
            have = {fingerprint_sha256(c) for c in current}
            return self._write(current + [c for c in certs if fingerprint_sha256(c) not in have])

    def withdraw(self, certs: Sequence[x509.Certificate], reason: str) -> int:
        with self._lock:
            gone = {fingerprint_sha256(c) for c in certs}
            return self._write([c for c in self.certificates() if fingerprint_sha256(c) not in gone])

    def _write(self, certs: list[x509.Certificate]) -> int:
        version = self.version() + 1
        write_atomic(self.path, pem_bundle(certs))
        write_atomic(self.version_path, f"{version}\n")
        return version


class MemoryFleet:
    """Relying parties held in memory; ``renewals`` records what ``request_renewal`` was asked."""

    def __init__(self, parties: Sequence[Party] = (), stale_after: timedelta = timedelta(hours=3)) -> None:
        self._parties = {p.name: p for p in parties}
        self.stale_after = stale_after
        self.renewals: list[tuple[str, timedelta]] = []

    def check_in(self, name: str, at: datetime, bundle_version: int | None) -> None:
        self._parties[name] = Party(name, at, bundle_version, False)

    def parties(self, now: datetime) -> list[Party]:
        return [replace(p, stale=p.stale or now - p.last_checkin > self.stale_after)
                for p in self._parties.values()]

    def request_renewal(self, selector: str, window: timedelta) -> int:
        self.renewals.append((selector, window))
        return len(self._parties)
