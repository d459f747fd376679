"""Emergency replacement: every selected certificate replaced by one with a new key, then revoked.

``trustyard emergency`` picks the issued, unexpired, not yet renewed certificates a selector
matches (an SPKI digest, serials, a name glob, an issuing CA, or ``--all``) and, in one
audited operation (``emergency.start``), records them (``store/emergency_store.py``):

- their keys are blocked: no issuance of any kind (REST issue, renewal, ACME finalize) for a
  CSR with one of those public keys again (``keyBlocked``, 403);
- each may authenticate exactly one renewal, to a new key (the ledger's "a certificate renews
  once" makes it one); with ``require_bootstrap`` none at all (``bootstrapRequired``, 403):
  its holder needs a new bootstrap token (``Emergencies.tokens`` mints one per identity);
- every relying party that checked in with one gets ``renew-now`` (a request in the fleet
  store now, and at each check-in the affected certificate makes, whatever the store says);
- ACME Renewal Information answers with a window in the past for them (``must_renew``);
- each is revoked with the emergency's reason once its replacement is seen serving (a check-in
  authenticated by the replacement whose ``endpoint_serial`` is the replacement's, or absent
  for a party without a verify endpoint: ``replaced``) or when the grace runs out
  (``unreachable``; a certificate no relying party ever checked in with counts as ``replaced``
  when a replacement was issued by then: its renewal, or any certificate for the same names,
  as an ACME client gets). Revocation is claimed by compare-and-set, so with several workers
  and replicas exactly one revokes each; it never cascades to the replacement.

The check-in side runs in the fleet's request path (``on_checkin``), the deadline side in
``serve``'s background job (``ca/emergency_job.py``).
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ..errors import BadRequest, Code, Conflict, Forbidden, NotFound, SelectionRefused
from ..store.emergency_store import PENDING, Affected, Candidate, EmergencyRow, EmergencyStore
from ..store.records import AuditEvent, CertRecord
from ..units import format_duration, format_time
from ..x509.revocation import REVOCATION_REASONS
from ..x509.summary import serial_text

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from ..store import SqlStore
    from ..store.fleet_store import FleetStore
    from .authority import Authority

__all__ = ["SELECTOR_KINDS", "Emergencies", "Selector", "spki_sha256"]

SELECTOR_KINDS = ("spki", "serial", "name", "issuer", "all")
STATES = ("replaced", "pending", "unreachable")
ACTIVE_RECHECK = 1.0  # seconds a worker trusts "no emergency open" before asking the database again
STALE_CLAIM = timedelta(seconds=60)  # a revocation claimed this long ago and not done is taken over
_HEX64 = re.compile(r"[0-9a-f]{64}")


def spki_sha256(key: Any) -> str:
    """The hex SHA-256 of a public key's SubjectPublicKeyInfo (what ``--spki`` takes)."""
    return hashlib.sha256(key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)).hexdigest()


@dataclass(frozen=True)
class Selector:
    """Which certificates: ``kind`` one of ``SELECTOR_KINDS``, and its value(s)."""

    kind: str
    values: tuple[str, ...] = ()

    @classmethod
    def of(cls, kind: str, values: Iterable[str] = ()) -> Selector:
        values = tuple(values)
        if kind not in SELECTOR_KINDS:
            raise BadRequest(f"unknown selector {kind!r}; one of {', '.join(SELECTOR_KINDS)}", code=Code.BAD_FIELD)
        if kind == "all":
            return cls(kind)
        if not values or not all(values):
            raise BadRequest(f"--{kind} needs a value", code=Code.BAD_FIELD, field=kind)
        if kind in ("spki", "issuer"):
            digest = values[0].replace(":", "").lower()
            if len(values) != 1 or not _HEX64.fullmatch(digest):
                raise BadRequest(f"--{kind}: one SHA-256 digest, 64 hex digits", code=Code.BAD_FIELD, field=kind)
            return cls(kind, (digest,))
        if kind == "serial":
            try:
                return cls(kind, tuple(serial_text(v) for v in values))
            except ValueError as exc:
                raise BadRequest(f"--serial: {exc}", code=Code.BAD_FIELD, field="serial") from None
        return cls(kind, tuple(v.lower() for v in values))

    def matches(self, cert: Candidate, spki: str) -> bool:
        if self.kind == "all":
            return True
        if self.kind == "spki":
            return spki == self.values[0]
        if self.kind == "issuer":
            return (cert.issuer_sha256 or "").lower() == self.values[0]
        if self.kind == "serial":
            return cert.serial in self.values
        names = [cert.subject.lower(), *(s.lower() for s in cert.sans)]
        return any(fnmatch.fnmatchcase(n, p) for n in names for p in self.values)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "value": list(self.values) if self.kind == "serial" else
                (self.values[0] if self.values else None)}

    def text(self) -> str:
        return "--all" if self.kind == "all" else f"--{self.kind} {' '.join(self.values)}"


class Emergencies:
    """Start, follow and finish emergencies on the CA's database; also the authority's
    ``guard`` (``check_issue``, ``renew_now``, ``on_checkin``)."""

    def __init__(self, store: SqlStore, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 renewable_for: timedelta = timedelta(0),
                 listeners: list[Callable[[str, str], None]] | None = None) -> None:
        self.ledger, self.clock = store, clock
        # [renewal] allow_after_expiry: a certificate expired less than this long ago may still
        # renew, so an emergency selects it too
        self.renewable_for = renewable_for
        # told ("revoked", provisioner) per revocation, as the authority's listeners are (metrics);
        # the authority's guard shares the authority's list
        self.listeners = listeners if listeners is not None else []
        self.store = EmergencyStore(store)
        self._open, self._checked_until = False, 0.0  # whether something is open, trusted until (monotonic)
        self._emergency_cache: dict[int, EmergencyRow] = {}  # an emergency's row never changes

    # -- starting one --------------------------------------------------------------------------

    def start(self, selector: Selector, reason: str, grace: timedelta, *, require_bootstrap: bool = False,
              actor: str = "cli", fleet: FleetStore | None = None) -> tuple[EmergencyRow, int]:
        """Select, record, audit and ask for renewals; the emergency and how many parties were
        asked to renew now. Refuses (changing nothing) a reason RFC 5280 does not name, a grace
        that is not positive, and a selection of nothing or of everything without ``--all``."""
        if reason not in REVOCATION_REASONS:
            raise BadRequest(f"unknown revocation reason {reason!r}; one of {', '.join(REVOCATION_REASONS)}",
                             code=Code.BAD_REVOCATION_REASON)
        if grace <= timedelta(0):
            raise BadRequest("--grace must be positive", code=Code.BAD_TTL, field="grace")
        now = self.clock()
        candidates = self.store.candidates(now, self.renewable_for)
        chosen = []
        for cert in candidates:
            spki = spki_sha256(x509.load_der_x509_certificate(cert.der).public_key())
            if selector.matches(cert, spki):
                chosen.append((cert, spki))
        total = len(candidates)
        if not chosen:
            raise SelectionRefused(f"{selector.text()} matched none of the {total} unexpired certificates (or "
                                   "still renewable) in no emergency: nothing changed", matched=0, total=total)
        if len(chosen) == total and selector.kind != "all":
            raise SelectionRefused(f"{selector.text()} matched all {total} unexpired certificates: say --all to "
                                   "replace every one; nothing changed", matched=total, total=total)
        seen = self.store.party_serials()
        deadline = now + grace
        emergency = {"started_at": now, "actor": actor, "selector": selector.to_json(), "reason": reason,
                     "grace_seconds": int(grace.total_seconds()), "require_bootstrap": int(require_bootstrap),
                     "count": len(chosen)}
        # A certificate renewed already has its replacement: no grace, it is revoked at the next
        # sweep (its renewal, if selected too, goes the way of every other).
        certs = [{"serial": c.serial, "identity": (c.subject or (c.sans or ("",))[0])[:255], "sans": c.sans,
                  "provisioner": c.provisioner, "spki_sha256": spki,
                  "fleet": int(c.serial in seen and c.superseded_by is None),
                  "deadline_at": now if c.superseded_by else deadline} for c, spki in chosen]
        serials = {c.serial for c, _ in chosen}
        holders = [(p.party, p.serial, now) for p in fleet.parties() if p.serial in serials] if fleet else []
        asked = 0

        def record(conn: Connection, new_id: int) -> None:  # in the emergency's own transaction
            nonlocal asked
            asked = fleet.request_renewals_in(conn, holders) if fleet is not None else 0
            self.ledger.append_audit(conn, AuditEvent(
                actor=actor, action="emergency.start", target=str(new_id), detail={
                    "selector": selector.to_json(), "reason": reason, "count": len(chosen),
                    "grace": format_duration(grace), "require_bootstrap": require_bootstrap, "renew_now": asked,
                    "deadline": format_time(deadline)}))

        self.store.start(emergency, certs, record)
        self._checked_until = 0.0
        row = self.store.latest()
        assert row is not None
        return row, asked

    # -- the authority's guard ------------------------------------------------------------------

    def check_issue(self, spki: str, renewed_from: str | None) -> None:
        """Refuse a renewal an emergency forbids, and any certificate for a blocked key."""
        # Asked of the database each time (not the ``_active`` cache): a renewal in the second
        # after an emergency starts must meet it too.
        if renewed_from is not None:
            for row in self.store.by_serials([renewed_from]):
                if self._require_bootstrap(row.emergency_id):
                    raise Forbidden(f"certificate {renewed_from} is being replaced in an emergency and may not "
                                    "renew itself: a new bootstrap token is needed (ask the operator for one)",
                                    code=Code.BOOTSTRAP_REQUIRED)
        if self.store.blocked(spki):
            raise Forbidden(f"this public key (SPKI SHA-256 {spki}) belongs to a certificate replaced in an "
                            "emergency: it is never certified again; make a new key", code=Code.KEY_BLOCKED,
                            value=spki)

    def renew_now(self, serial: str) -> bool:
        """Whether ``serial`` is being replaced (ACME Renewal Information: a window in the past)."""
        return self._active() and bool(self.store.by_serials([serial]))

    def on_checkin(self, record: CertRecord, endpoint_serial: str | None) -> bool:
        """A check-in authenticated by ``record``: True when it is an affected certificate (its
        holder must renew now); when it is a replacement, the old one is retired if the
        replacement is serving (``endpoint_serial``, or no endpoint to verify)."""
        if not self._active():
            return False
        now = self.clock()
        renew = False
        rows = self.store.by_serials([record.serial, record.renewed_from])
        for row in rows:
            if row.serial == record.serial:
                renew = row.state == PENDING and record.superseded_by is None
                if not row.fleet:  # a party holds it: replaced only when its replacement is seen
                    self.store.mark_fleet(row.serial)
            elif row.state == PENDING:
                self._replacement_checked_in(row, record.serial, endpoint_serial, now)
        if not rows:  # a certificate bootstrapped with a token `emergency tokens` minted?
            jti = self.store.token_jti_of(record.serial)
            if jti:
                for row in self.store.by_token(jti):
                    if row.state == PENDING and row.identity == (record.subject or (record.sans or ("",))[0]):
                        self._replacement_checked_in(row, record.serial, endpoint_serial, now)
        return renew

    def _replacement_checked_in(self, row: Affected, replacement: str, endpoint_serial: str | None,
                                now: datetime) -> None:
        if endpoint_serial is None or _same_serial(endpoint_serial, replacement):
            self._retire(row, "replaced", replacement, now)
        elif row.replacement is None:
            self.store.note_replacement(row.serial, replacement)

    # -- retiring -------------------------------------------------------------------------------

    def sweep(self) -> int:
        """Revoke every certificate whose grace ran out, and finish revocations another worker
        claimed and never completed; how many this call revoked."""
        now = self.clock()
        stale_before = now - STALE_CLAIM
        done = 0
        issued: dict[int, list[tuple[str, tuple[str, ...]]]] = {}
        for row in self.store.due(now, stale_before):
            if row.state == PENDING:
                outcome, replacement = self._at_deadline(row, issued)
                done += self._retire(row, outcome, replacement, now)
            elif self.store.reclaim(row.serial, stale_before, now):
                done += self._revoke(row, row.state, row.replacement, now)
        return done

    def _at_deadline(self, row: Affected, issued: dict[int, list[tuple[str, tuple[str, ...]]]]
                     ) -> tuple[str, str | None]:
        if row.fleet:  # seen serving would have retired it already
            return "unreachable", row.replacement
        child = self.ledger.renewal_of(row.serial)
        if child is not None and child.status == "issued":
            return "replaced", child.serial
        if row.emergency_id not in issued:  # once per sweep: what was issued since, unaffected
            since = self.store.issued_since(self._emergency(row.emergency_id).started_at)
            affected = {a.serial for a in self.store.by_serials(s for s, _ in since)}
            issued[row.emergency_id] = [(s, sans) for s, sans in since if s not in affected]
        names = set(row.sans)
        return next((("replaced", s) for s, sans in issued[row.emergency_id] if set(sans) == names),
                    ("unreachable", None))

    def _retire(self, row: Affected, outcome: str, replacement: str | None, now: datetime) -> int:
        if not self.store.claim(row.serial, outcome, replacement, now):
            return 0  # another worker or replica got there first
        return self._revoke(row, outcome, replacement, now)

    def _revoke(self, row: Affected, outcome: str, replacement: str | None, now: datetime) -> int:
        reason = self._emergency(row.emergency_id).reason
        event = AuditEvent(actor="emergency", action="certificate.revoke", target=row.serial, detail={
            "reason": reason, "emergency": row.emergency_id, "outcome": outcome, "replacement": replacement})
        try:
            self.ledger.revoke(row.serial, reason, event, cascade=False)  # never its replacement
            revoked = 1
        except (Conflict, NotFound):
            revoked = 0  # revoked by hand meanwhile
        self.store.mark_revoked(row.serial, now)
        if revoked:
            for listener in self.listeners:
                listener("revoked", row.provisioner)
        return revoked

    # -- for the operator -----------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The last emergency, as ``trustyard emergency status --json`` shows it."""
        emergency = self.store.latest()
        counts = dict.fromkeys(STATES, 0)
        if emergency is None:
            return {"emergency": None, "counts": counts, "identities": []}
        identities = []
        for row in self.store.certs(emergency.id):
            counts[row.state] = counts.get(row.state, 0) + 1
            identities.append({"identity": row.identity, "serial": row.serial, "state": row.state,
                               "replacement": row.replacement})
        return {"emergency": emergency_json(emergency), "counts": counts, "identities": identities}

    def tokens(self, authority: Authority[Any], ttl: timedelta, actor: str = "cli") -> list[dict[str, Any]]:
        """One bootstrap token per identity of the last emergency not replaced yet (each
        remembered, so the certificate it buys counts as the replacement when it checks in)."""
        emergency = self.store.latest()
        if emergency is None:
            raise NotFound("no emergency has been started", code=Code.NO_EMERGENCY)
        groups: dict[tuple[str, tuple[str, ...], str], list[str]] = defaultdict(list)
        for row in self.store.certs(emergency.id):
            if row.state != "replaced":
                groups[(row.identity, row.sans, row.provisioner)].append(row.serial)
        minted = []
        for (identity, sans, provisioner), serials in sorted(groups.items()):
            token = authority.mint_token(provisioner, identity, list(sans), ttl=ttl, actor=actor)
            claims = jwt.decode(token, options={"verify_signature": False})
            self.store.set_token(serials, str(claims["jti"]))
            minted.append({"identity": identity, "sans": list(sans), "provisioner": provisioner,
                           "serials": serials, "token": token,
                           "expires_at": format_time(datetime.fromtimestamp(int(claims["exp"]), UTC))})
        return minted

    # -- helpers --------------------------------------------------------------------------------

    def _active(self) -> bool:
        """Whether any emergency certificate is not revoked yet, asked of the database at most
        once per ``ACTIVE_RECHECK`` (a check-in costs nothing more when no emergency runs; a
        worker notices a new one within that time)."""
        now = time.monotonic()
        if now >= self._checked_until:
            self._open = self.store.open_count() > 0
            self._checked_until = now + ACTIVE_RECHECK
        return self._open

    def _emergency(self, emergency_id: int) -> EmergencyRow:
        row = self._emergency_cache.get(emergency_id)
        if row is None:
            row = self._emergency_cache[emergency_id] = self.store.get(emergency_id)
        return row

    def _require_bootstrap(self, emergency_id: int) -> bool:
        return self._emergency(emergency_id).require_bootstrap


def emergency_json(e: EmergencyRow) -> dict[str, Any]:
    return {"id": e.id, "started_at": format_time(e.started_at), "actor": e.actor, "selector": e.selector,
            "reason": e.reason, "grace": format_duration(timedelta(seconds=e.grace_seconds)),
            "deadline": format_time(e.started_at + timedelta(seconds=e.grace_seconds)),
            "require_bootstrap": e.require_bootstrap, "count": e.count}


def _same_serial(reported: str, serial: str) -> bool:
    try:
        return serial_text(reported) == serial
    except ValueError:
        return False
