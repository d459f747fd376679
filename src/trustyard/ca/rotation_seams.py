"""Plain implementations of the journal's ``FleetView`` and ``BundleSource`` (``ca/rotation.py``).

``HomeBundle`` is the CA home's bundle (``ca/roots.pem``, each change published as the next
database version by ``ca/bundle.py``); ``FleetParties`` is the fleet table the agents' and
services' check-ins fill (``ca/fleet.py``); ``MemoryFleet`` is a fleet whose parties are told,
for tests.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from cryptography import x509

from ..files import write_atomic
from ..store.engine import Database
from ..store.fleet_store import FleetStore
from ..store.rotations import RotationStore
from ..x509.summary import fingerprint_sha256
from . import bundle
from .config import Config
from .fleet import party_state, spread_renewals
from .rotation import Party


class HomeBundle:
    """The trust bundle of a CA home: ``ca/roots.pem``, which ``ca/bundle.py`` composes the
    bundle from, and each change published as the bundle's next version in the database, so
    every worker and replica serves it (``GET /v1/roots``) and check-ins are compared with it."""

    def __init__(self, config: Config, db: Database) -> None:
        self.config, self.db = config, db
        self._lock = threading.Lock()

    def certificates(self) -> list[x509.Certificate]:
        return bundle.roots_of(self.config)

    def version(self) -> int:
        latest = bundle.latest(self.db)
        return latest.version if latest is not None else 0

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
        write_atomic(self.config.path(bundle.ROOTS_FILE), bundle.compose(certs))
        return bundle.refresh(self.config, self.db).version


class FleetParties:
    """The fleet table (``store/fleet_store.py``: the parties that check in) as the journal's
    ``FleetView``; a renewal request for ``issuer:<sha256>`` asks the parties whose current
    certificate that CA signed, spread over the window (``ca/fleet.py`` ``spread_renewals``).
    The window starts ``lead`` from now (the workers' ``poll_interval``): a worker notices that a
    rotation switched the signer or the chain only at its next poll, and a party renewing before
    that would be issued the material it was asked to replace."""

    def __init__(self, db: Database, rotations: RotationStore,
                 legacy_issuer: Callable[[str], Callable[[bytes], bool] | None] = lambda _sha: None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC), rng: random.Random | None = None,
                 lead: timedelta = timedelta(0)) -> None:
        self.store, self.rotations = FleetStore(db), rotations
        self.legacy_issuer, self.clock, self.rng = legacy_issuer, clock, rng or random.Random()
        self.lead = lead

    def parties(self, now: datetime) -> list[Party]:
        return [Party(r.party, r.last_checkin, r.bundle_version, party_state(r, now) == "stale")
                for r in self.store.parties()]

    def request_renewal(self, selector: str, window: timedelta) -> int:
        kind, _, issuer = selector.partition(":")
        if kind != "issuer" or not issuer:
            raise ValueError(f"a renewal selector is issuer:<sha256>, not {selector!r}")
        now = self.clock()
        serials = self.rotations.vouched_serials(issuer, now, self.legacy_issuer(issuer))
        rows = [r for r in self.store.parties() if r.serial in serials]
        return spread_renewals(self.store, rows, now + self.lead, window, self.rng)


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
