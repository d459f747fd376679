"""The relying parties that check in with the CA (table ``relying_parties``, migration 0006).

Only storage: ``ca.fleet`` authenticates a check-in and decides the directives. A check-in is
one short write transaction without an fsync of its own (``durable=False``: a lost check-in is
repeated a minute later): a read of the party's row by primary key, then one UPDATE (or the
INSERT of a new party). Runs on the engine's public API (``transaction``, ``run``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from ..errors import Code, Unauthorized
from .engine import Database
from .records import utc
from .schema import relying_parties

__all__ = ["CheckinRow", "FleetStore", "PartyRow"]


@dataclass(frozen=True)
class CheckinRow:
    """What one check-in reports, already authenticated and checked."""

    party: str
    identity: str
    instance: str
    kind: str
    serial: str
    not_after: datetime
    bundle_version: int | None
    bundle_sha256: str | None
    endpoint_serial: str | None
    failures: int
    last_error: str | None
    agent_version: str
    interval_seconds: int


@dataclass(frozen=True)
class PartyRow(CheckinRow):
    """A party's row: its last check-in's report, and what the CA keeps beside it."""

    first_seen: datetime
    last_checkin: datetime
    last_jti: str | None
    renew_after: datetime | None
    renew_serial: str | None


@dataclass(frozen=True)
class Recorded:
    """The outcome of a check-in: whether a renew-now is due for the certificate it reported."""

    renew_due: bool
    new_party: bool


class FleetStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def checkin(self, row: CheckinRow, jti: str, now: datetime, renewed_from: str | None = None) -> Recorded:
        """Record ``row``; a proof (``jti``) already used for this party's last check-in is refused
        and changes nothing. A pending renew-now for certificate S is due only to a check-in
        authenticated by S, and cleared only by one authenticated by the renewal of S
        (``renewed_from``, from the ledger): a check-in by any other certificate that reports
        this party's instance id (another instance of the identity) leaves it as it is."""
        values = {f.name: getattr(row, f.name) for f in fields(row)}  # flat: asdict deep-copies, slowly
        with self.db.transaction(durable=False) as conn:
            prior = self.db.run(conn, _GET, {"party_": row.party}).first()
            if prior is None:
                try:
                    with conn.begin_nested():  # PostgreSQL: a failed INSERT must not abort the transaction
                        self.db.run(conn, _INSERT, {**values, "first_seen": now, "last_checkin": now,
                                                    "last_jti": jti, "renew_after": None, "renew_serial": None})
                    return Recorded(renew_due=False, new_party=True)
                except IntegrityError:  # another worker inserted it first
                    prior = self.db.run(conn, _GET, {"party_": row.party}).one()
            if prior.last_jti == jti:
                raise Unauthorized("this check-in proof was already used", code=Code.BAD_PROOF)
            renew_after, renew_serial = utc(prior.renew_after), prior.renew_serial
            if renew_serial is not None and renewed_from is not None and renewed_from == renew_serial:
                renew_after = renew_serial = None  # it renewed: the request is done
            params = {f"b_{k}": v for k, v in values.items() if k not in ("party", "identity", "instance")}
            params.update(party_=row.party, b_last_checkin=now, b_last_jti=jti, b_renew_after=renew_after,
                          b_renew_serial=renew_serial)
            self.db.run(conn, _UPDATE, params)
        due = renew_after is not None and renew_serial == row.serial and renew_after <= now
        return Recorded(renew_due=due, new_party=False)

    def request_renewals(self, wanted: Iterable[tuple[str, str, datetime]]) -> int:
        """``(party, serial, renew_after)`` each: a renew-now for that party's certificate
        ``serial``, due from ``renew_after``. A party that reports another serial by then
        (it renewed meanwhile) is left alone. Returns how many were recorded."""
        params = [{"party_": p, "serial_": s, "b_renew_after": at, "b_renew_serial": s} for p, s, at in wanted]
        if not params:
            return 0
        with self.db.transaction() as conn:
            return self._request_renewals(conn, params)

    def request_renewals_in(self, conn: Connection, wanted: Iterable[tuple[str, str, datetime]]) -> int:
        """``request_renewals`` inside the caller's transaction ``conn``."""
        return self._request_renewals(conn, [{"party_": p, "serial_": s, "b_renew_after": at, "b_renew_serial": s}
                                             for p, s, at in wanted])

    def _request_renewals(self, conn: Connection, params: list[dict[str, Any]]) -> int:
        done = 0
        for p in params:  # one by one: a plan's executemany reports no per-row count
            done += self.db.run(conn, _REQUEST_RENEWAL, p).rowcount
        return done

    def get(self, party: str) -> PartyRow | None:
        with self.db.transaction(write=False) as conn:
            row = self.db.run(conn, _GET, {"party_": party}).first()
        return _party(row) if row is not None else None

    def parties(self) -> list[PartyRow]:
        query = select(relying_parties).order_by(relying_parties.c.identity, relying_parties.c.instance)
        with self.db.transaction(write=False) as conn:
            rows = conn.execute(query).fetchall()
        return [_party(r) for r in rows]


def _party(row: Any) -> PartyRow:
    values = {c.key: getattr(row, c.key) for c in relying_parties.columns}
    for key in ("not_after", "first_seen", "last_checkin", "renew_after"):
        values[key] = utc(values[key])
    return PartyRow(**values)


_GET = select(relying_parties).where(relying_parties.c.party == bindparam("party_"))
_INSERT = insert(relying_parties)
_UPDATE = (update(relying_parties).where(relying_parties.c.party == bindparam("party_"))
           .values({c.key: bindparam(f"b_{c.key}") for c in relying_parties.columns
                    if c.key not in ("party", "identity", "instance", "first_seen")}))
_REQUEST_RENEWAL = (update(relying_parties)
                    .where(relying_parties.c.party == bindparam("party_"),
                           relying_parties.c.serial == bindparam("serial_"))
                    .values(renew_after=bindparam("b_renew_after"), renew_serial=bindparam("b_renew_serial")))
