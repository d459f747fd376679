"""Generating the CRLs: a thread in the ``serve`` process, beside the autopilot.

Every tick (a quarter of ``[crl] delay``, at most 5 s) it asks the ``crls`` table which shards
are due (``store/crls.py``): a period not yet generated, a revocation since the last claim at
least half of ``delay`` ago (so the revocations of a burst share one generation, made after
it, and each still reaches its CRL within ``delay``), or a claim whose CRL never arrived. For each it claims the next CRL number (a compare-and-set:
of several replicas on one PostgreSQL exactly one wins), reads the shard's unexpired revoked
certificates from ``ix_certificates_crl`` alone, signs the CRL with the intermediate that issued
them and stores it; every replica then serves those bytes. It signs for the home's
intermediate and every intermediate a rotation made current (their keys are in the home).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ..store import SqlStore
from ..store.crls import CrlStore, Due
from ..x509.crl import Revoked, sign_crl
from ..x509.keys import PrivateKey
from ..x509.summary import fingerprint_sha256
from .config import Config
from .crl import CrlScheme
from .periodic import Periodic

log = logging.getLogger("trustyard.crl")


@dataclass(frozen=True)
class IssuerKey:
    certificate: x509.Certificate
    key: PrivateKey


class CrlJob(Periodic):
    """Generates the due CRLs of this CA's intermediates (``tick``), on a thread (``start``)."""

    def __init__(self, config: Config, password: bytes | None, store: SqlStore,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.config, self.password, self.store, self.clock = config, password, store, clock
        self.crls = CrlStore(store)
        self.scheme = CrlScheme.of(config.url, config.crl)
        self.period = config.crl.duration("period")
        self.next_update = config.crl.duration("next_update")
        self.delay = config.crl.duration("delay")
        self.issuers: dict[str, IssuerKey] = {}
        self._loaded: set[tuple[str, str]] = set()  # (certificate, key) paths loaded
        self.generated = 0  # CRLs this job generated (for tests and the log)
        super().__init__()

    # -- which intermediates ------------------------------------------------------------------

    def load_issuers(self) -> None:
        """The home's intermediate and every one a rotation made current, with their keys; rows
        for their shards (a ConfigError when ``[crl] shards`` changed since they were made)."""
        from ..store.rotations import RotationStore
        from .home import load_certs, load_key
        from .rotation_material import ISSUING

        pairs = [(self.config.intermediate_cert, self.config.intermediate_key)]
        pairs += [(row.paths["intermediate_cert"], row.paths["intermediate_key"])
                  for row in RotationStore(self.store).all()
                  if row.state in ISSUING and "intermediate_cert" in row.paths]
        for pair in pairs:
            if pair in self._loaded:
                continue
            cert = load_certs(self.config, pair[0])[0]
            fingerprint = fingerprint_sha256(cert)
            self.crls.ensure(fingerprint, self.scheme.shards)
            self.issuers[fingerprint] = IssuerKey(cert, load_key(self.config, pair[1], self.password))
            self._loaded.add(pair)

    # -- one round --------------------------------------------------------------------------

    def period_of(self, now: datetime) -> int:
        return int(now.timestamp() // self.period.total_seconds())

    def tick(self) -> int:
        """Generate every due shard this replica claims; how many it generated."""
        self.load_issuers()
        now = self.clock()
        period = self.period_of(now)
        stale_before = now - max(2 * self.delay, timedelta(seconds=30))
        dirty_before = now - self.delay / 2  # then a tick (at most delay / 4) and the generation: within delay
        made = 0
        for due in self.crls.due(period, stale_before, dirty_before):
            issuer = self.issuers.get(due.issuer_sha256)
            if issuer is None or not self.crls.claim(due, period, now, stale_before, dirty_before):
                continue  # not ours to sign, or another replica claimed it
            self.generate(due, issuer, due.number + 1)
            made += 1
        self.generated += made
        return made

    def generate(self, due: Due, issuer: IssuerKey, number: int) -> x509.CertificateRevocationList:
        now = self.clock()
        entries = self.crls.entries(due.issuer_sha256, due.shard, now)
        crl = sign_crl(issuer.certificate, issuer.key, self.scheme.url(due.issuer_sha256, due.shard), number, now,
                       now + self.next_update,
                       (Revoked(int(e.serial, 16), e.revoked_at, e.reason) for e in entries))
        self.crls.publish(due, number, crl.public_bytes(Encoding.DER), now, now + self.next_update, len(entries))
        log.debug("CRL %s/%d number %d: %d entries", due.issuer_id, due.shard, number, len(entries))
        return crl

    # -- the thread -------------------------------------------------------------------------

    name, what, log = "trustyard-crl", "CRL generation", log
    # The first round runs at once: a CDP URL the CA already hands out must not be a 404 for a
    # tick's length after a start.
    first_at_once = True
    # A round at a million revoked certificates costs seconds of CPU (a shard of 63K entries:
    # about 1.2 s): it takes what the API's workers leave, not their cores.
    nice = 10

    @property
    def interval(self) -> float:
        return min(max(self.delay.total_seconds() / 4, 0.2), 5.0)
