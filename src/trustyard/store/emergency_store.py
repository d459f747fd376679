"""The emergencies (``emergencies``, ``emergency_certs``: migration 0010), storage only.

``ca.emergency`` decides what is selected, when an old certificate goes and why. Revocation
is claimed here by compare-and-set on ``state`` (``pending`` -> an outcome), so of several
workers and replicas on one database exactly one revokes each certificate; a claim whose
revocation never completed (a crash in between) is taken again after a while (``reclaim``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from ..errors import Conflict
from .engine import Database
from .records import utc
from .schema import certificates, emergencies, emergency_certs, relying_parties

__all__ = ["Affected", "Candidate", "EmergencyRow", "EmergencyStore"]

PENDING = "pending"


@dataclass(frozen=True)
class Candidate:
    """An issued certificate an emergency may select: unexpired, or expired so recently that it
    may still renew (``[renewal] allow_after_expiry``); renewed already or not."""

    serial: str
    provisioner: str
    subject: str
    sans: tuple[str, ...]
    der: bytes
    issuer_sha256: str | None
    superseded_by: str | None = None


@dataclass(frozen=True)
class EmergencyRow:
    id: int
    started_at: datetime
    actor: str
    selector: dict[str, Any]
    reason: str
    grace_seconds: int
    require_bootstrap: bool
    count: int


@dataclass(frozen=True)
class Affected:
    serial: str
    emergency_id: int
    identity: str
    sans: tuple[str, ...]
    provisioner: str
    spki_sha256: str
    fleet: bool
    deadline_at: datetime
    state: str
    replacement: str | None
    claimed_at: datetime | None
    revoked_at: datetime | None
    token_jti: str | None


_BLOCKED = (select(emergency_certs.c.serial).where(emergency_certs.c.spki_sha256 == bindparam("b_spki"))
            .limit(1))


class EmergencyStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- selection and start ----------------------------------------------------------------

    def candidates(self, now: datetime, renewable_for: timedelta = timedelta(0)) -> list[Candidate]:
        """Every issued certificate in no emergency that still works: unexpired, or expired less
        than ``renewable_for`` ago (it may still renew). Renewed ones are in: their key is as
        exposed as any, and they stay valid until they expire."""
        taken = select(emergency_certs.c.serial)
        query = (select(certificates.c.serial, certificates.c.provisioner, certificates.c.subject,
                        certificates.c.sans, certificates.c.der, certificates.c.issuer_sha256,
                        certificates.c.superseded_by)
                 .where(certificates.c.status == "issued", certificates.c.not_after > now - renewable_for,
                        certificates.c.serial.not_in(taken))
                 .order_by(certificates.c.subject, certificates.c.serial))
        with self.db.transaction(write=False) as conn:
            rows = conn.execute(query).fetchall()
        return [Candidate(r.serial, r.provisioner, r.subject, tuple(json.loads(r.sans)), r.der, r.issuer_sha256,
                          r.superseded_by)
                for r in rows if r.der is not None]

    def party_serials(self) -> set[str]:
        """The certificates relying parties checked in with last."""
        with self.db.transaction(write=False) as conn:
            return {r[0] for r in conn.execute(select(relying_parties.c.serial).distinct())}

    def start(self, emergency: dict[str, Any], certs: list[dict[str, Any]],
              within: Callable[[Connection, int], None] | None = None) -> int:
        """Insert the emergency and its certificates, then ``within(conn, id)`` (its audit entry),
        in one transaction; its id. A certificate another emergency took meanwhile (a start
        racing this one) is a ``Conflict`` and nothing is recorded."""
        try:
            with self.db.transaction() as conn:
                result = conn.execute(insert(emergencies).values(
                    **{**emergency, "selector": json.dumps(emergency["selector"], sort_keys=True)}))
                key = result.inserted_primary_key
                assert key is not None
                new_id = int(key[0])
                conn.execute(insert(emergency_certs), [
                    {**c, "emergency_id": new_id, "sans": json.dumps(list(c["sans"])), "state": PENDING,
                     "replacement": None, "claimed_at": None, "revoked_at": None, "token_jti": None}
                    for c in certs])
                if within is not None:
                    within(conn, new_id)
        except IntegrityError as e:
            taken = self.by_serials(c["serial"] for c in certs)
            if not taken:
                raise
            raise Conflict(f"certificate {taken[0].serial} is already in emergency {taken[0].emergency_id} "
                           "(another emergency started meanwhile): nothing changed; select again") from e
        return new_id

    # -- reading -----------------------------------------------------------------------------

    def latest(self) -> EmergencyRow | None:
        return self._emergency(select(emergencies).order_by(emergencies.c.id.desc()).limit(1))

    def get(self, emergency_id: int) -> EmergencyRow:
        row = self._emergency(select(emergencies).where(emergencies.c.id == emergency_id))
        if row is None:
            raise KeyError(emergency_id)
        return row

    def _emergency(self, query: Any) -> EmergencyRow | None:
        with self.db.transaction(write=False) as conn:
            row = conn.execute(query).first()
        if row is None:
            return None
        return EmergencyRow(id=row.id, started_at=_when(row.started_at), actor=row.actor,
                            selector=json.loads(row.selector), reason=row.reason, grace_seconds=row.grace_seconds,
                            require_bootstrap=bool(row.require_bootstrap), count=int(row._mapping["count"]))

    def certs(self, emergency_id: int) -> list[Affected]:
        query = (select(emergency_certs).where(emergency_certs.c.emergency_id == emergency_id)
                 .order_by(emergency_certs.c.identity, emergency_certs.c.serial))
        return self._affected(query)

    def by_serials(self, serials: Iterable[str | None]) -> list[Affected]:
        wanted = [s for s in serials if s]
        found: list[Affected] = []
        for at in range(0, len(wanted), 500):  # bounded statements, whatever the database's limit
            found += self._affected(select(emergency_certs).where(emergency_certs.c.serial.in_(wanted[at:at + 500])))
        return found

    def by_token(self, jti: str) -> list[Affected]:
        return self._affected(select(emergency_certs).where(emergency_certs.c.token_jti == jti))

    def blocked(self, spki_sha256: str) -> bool:
        # Asked at every issuance: a prebuilt statement (a compiled plan on SQLite).
        with self.db.transaction(write=False) as conn:
            return self.db.run(conn, _BLOCKED, {"b_spki": spki_sha256}).first() is not None

    def open_count(self) -> int:
        """Certificates of any emergency not revoked yet."""
        query = select(func.count()).select_from(emergency_certs).where(emergency_certs.c.revoked_at.is_(None))
        with self.db.transaction(write=False) as conn:
            return int(conn.execute(query).scalar_one())

    def due(self, now: datetime, stale_before: datetime) -> list[Affected]:
        """Pending certificates whose grace ran out, and claims whose revocation never completed."""
        c = emergency_certs.c
        query = select(emergency_certs).where(
            ((c.state == PENDING) & (c.deadline_at <= now))
            | ((c.state != PENDING) & c.revoked_at.is_(None) & (c.claimed_at < stale_before)))
        return self._affected(query.order_by(c.deadline_at, c.serial))

    def issued_since(self, since: datetime) -> list[tuple[str, tuple[str, ...]]]:
        """(serial, sans) of every certificate issued from ``since`` on and not revoked."""
        query = (select(certificates.c.serial, certificates.c.sans)
                 .where(certificates.c.status == "issued", certificates.c.requested_at >= since))
        with self.db.transaction(write=False) as conn:
            return [(r.serial, tuple(json.loads(r.sans))) for r in conn.execute(query)]

    def token_jti_of(self, serial: str) -> str | None:
        with self.db.transaction(write=False) as conn:
            return conn.execute(select(certificates.c.token_jti).where(certificates.c.serial == serial)).scalar()

    # -- writing -----------------------------------------------------------------------------

    def note_replacement(self, serial: str, replacement: str) -> None:
        """Remember what replaced ``serial`` (not seen serving yet)."""
        c = emergency_certs.c
        with self.db.transaction(durable=False) as conn:
            conn.execute(update(emergency_certs).where(c.serial == serial, c.state == PENDING,
                                                       c.replacement.is_(None)).values(replacement=replacement))

    def claim(self, serial: str, outcome: str, replacement: str | None, now: datetime) -> bool:
        """Compare-and-set ``pending`` -> ``outcome``: True for the one caller that should revoke."""
        c = emergency_certs.c
        values: dict[str, Any] = {"state": outcome, "claimed_at": now}
        if replacement is not None:
            values["replacement"] = replacement
        with self.db.transaction() as conn:
            done = conn.execute(update(emergency_certs).where(c.serial == serial, c.state == PENDING)
                                .values(**values)).rowcount
        return done == 1

    def reclaim(self, serial: str, stale_before: datetime, now: datetime) -> bool:
        """Take over a claim made before ``stale_before`` whose revocation never completed."""
        c = emergency_certs.c
        with self.db.transaction() as conn:
            done = conn.execute(update(emergency_certs).where(c.serial == serial, c.state != PENDING,
                                                              c.revoked_at.is_(None), c.claimed_at < stale_before)
                                .values(claimed_at=now)).rowcount
        return done == 1

    def mark_fleet(self, serial: str) -> None:
        with self.db.transaction(durable=False) as conn:
            conn.execute(update(emergency_certs).where(emergency_certs.c.serial == serial).values(fleet=1))

    def mark_revoked(self, serial: str, now: datetime) -> None:
        with self.db.transaction() as conn:
            conn.execute(update(emergency_certs).where(emergency_certs.c.serial == serial).values(revoked_at=now))

    def set_token(self, serials: list[str], jti: str) -> None:
        with self.db.transaction() as conn:
            conn.execute(update(emergency_certs).where(emergency_certs.c.serial.in_(serials)).values(token_jti=jti))

    def _affected(self, query: Any) -> list[Affected]:
        with self.db.transaction(write=False) as conn:
            rows = conn.execute(query).fetchall()
        return [Affected(serial=r.serial, emergency_id=r.emergency_id, identity=r.identity,
                         sans=tuple(json.loads(r.sans)), provisioner=r.provisioner, spki_sha256=r.spki_sha256,
                         fleet=bool(r.fleet), deadline_at=_when(r.deadline_at), state=r.state,
                         replacement=r.replacement, claimed_at=utc(r.claimed_at) if r.claimed_at else None,
                         revoked_at=utc(r.revoked_at) if r.revoked_at else None, token_jti=r.token_jti)
                for r in rows]


def _when(value: datetime) -> datetime:
    when = utc(value)
    assert when is not None
    return when

