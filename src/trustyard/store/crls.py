"""Revocation lists in the database (``schema.crls``): one row per issuing intermediate and
shard, holding the newest CRL (what every replica serves) and the claim that lets exactly one
replica generate the next one.

A generation is claimed by a compare-and-set on the row's CRL number: of two replicas that saw
number N, only one moves it to N + 1, and only while the row is due (a period it was not yet
generated for, a revocation since the last claim, or a claim whose CRL never arrived). The
numbers live in the database, so they increase across restarts and replicas. A revocation
marks its shard dirty in the revoking transaction (``mark_dirty``: one indexed update, which
keeps the time of the first mark since the last claim); it never builds a CRL itself. A dirty
shard is due once its first mark is older than the caller's ``dirty_before``, so a burst of
revocations costs one generation, after the burst, not one per tick while it runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, bindparam, func, insert, literal_column, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ColumnElement

from ..errors import Code, ConfigError
from .engine import Database
from .records import utc
from .schema import certificates, crls


def issuer_id(issuer_sha256: str) -> str:
    """The issuer's name in CRL URLs and the ``crls`` key: its fingerprint's first 16 hex digits."""
    return issuer_sha256[:16]


@dataclass(frozen=True)
class Due:
    issuer_id: str
    shard: int
    issuer_sha256: str
    number: int  # the number seen: the claim moves it to number + 1


@dataclass(frozen=True)
class Entry:
    serial: str
    revoked_at: datetime
    reason: str | None


@dataclass(frozen=True)
class Published:
    der: bytes
    number: int
    this_update: datetime
    next_update: datetime


def mark_dirty(conn: Connection, serials: Iterable[str], now: datetime) -> None:
    """Inside the revoking transaction: the shards of the CRLs ``serials`` belong on are due."""
    serials = list(serials)
    rows = conn.execute(select(certificates.c.issuer_sha256, certificates.c.crl_shard)
                        .where(certificates.c.serial.in_(serials), certificates.c.crl_shard.is_not(None),
                               certificates.c.issuer_sha256.is_not(None))).fetchall()
    for key in {(issuer_id(r.issuer_sha256), r.crl_shard) for r in rows}:
        conn.execute(_DIRTY, {"b_id": key[0], "b_shard": key[1], "b_now": now})


class CrlStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def ensure(self, issuer_sha256: str, shards: int) -> None:
        """Rows for every shard of ``issuer_sha256``; a ConfigError when its certificates are
        already spread over another number of shards (their CRL URLs are fixed)."""
        ident = issuer_id(issuer_sha256)
        for _attempt in range(2):
            with self.db.transaction() as conn:
                rows = conn.execute(select(crls.c.shard, crls.c.shards).where(crls.c.issuer_id == ident)).fetchall()
                other = {r.shards for r in rows} - {shards}
                if other:
                    raise ConfigError(f"[crl] shards = {shards}, but the certificates of issuer {ident} name CRLs of "
                                      f"{min(other)} shards in their CRL Distribution Points: the number of shards "
                                      f"cannot change once certificates exist; set it back to {min(other)}",
                                      code=Code.CONFIG)
                missing = sorted(set(range(shards)) - {r.shard for r in rows})
                if not missing:
                    return
                try:
                    conn.execute(insert(crls), [dict(
                        issuer_id=ident, shard=s, issuer_sha256=issuer_sha256, shards=shards, number=0, period=-1,
                        der_number=0, entries=0) for s in missing])
                    return
                except IntegrityError:
                    pass  # another replica inserted them first: read again

    def shard_counts(self) -> set[int]:
        """How many shards each issuer's CRLs are spread over (one value, or none, normally)."""
        with self.db.transaction(write=False) as conn:
            return {r[0] for r in conn.execute(select(crls.c.shards).distinct())}

    def due(self, period: int, stale_before: datetime, dirty_before: datetime) -> list[Due]:
        with self.db.transaction(write=False) as conn:
            rows = conn.execute(select(crls.c.issuer_id, crls.c.shard, crls.c.issuer_sha256, crls.c.number)
                                .where(_due(period, stale_before, dirty_before))
                                .order_by(crls.c.issuer_id, crls.c.shard)).fetchall()
        return [Due(r.issuer_id, r.shard, r.issuer_sha256, r.number) for r in rows]

    def claim(self, due: Due, period: int, now: datetime, stale_before: datetime, dirty_before: datetime) -> bool:
        """Move the row's number from ``due.number`` to the next, if it is still due: True for
        the one caller that did (it generates CRL number ``due.number + 1``)."""
        with self.db.transaction(durable=False) as conn:
            result = conn.execute(
                update(crls).where(crls.c.issuer_id == due.issuer_id, crls.c.shard == due.shard,
                                   crls.c.number == due.number, _due(period, stale_before, dirty_before))
                .values(number=due.number + 1, period=period, claimed_at=now, dirty_at=None))
            return result.rowcount == 1

    def entries(self, issuer_sha256: str, shard: int, now: datetime) -> list[Entry]:
        """The unexpired revoked certificates of one shard (``ix_certificates_crl``)."""
        with self.db.transaction(write=False) as conn:
            rows = self.db.run(conn, _ENTRIES, {"b_issuer": issuer_sha256, "b_shard": shard, "b_now": now}).fetchall()
        # No time zone conversion: cryptography reads a naive time as UTC, the way SQLite keeps it.
        return [Entry(r.serial, r.revoked_at, r.revocation_reason) for r in rows]

    def publish(self, due: Due, number: int, der: bytes, this_update: datetime, next_update: datetime,
                entries: int) -> bool:
        """Store CRL ``number`` for serving, unless a newer one is already there."""
        with self.db.transaction() as conn:
            return conn.execute(
                update(crls).where(crls.c.issuer_id == due.issuer_id, crls.c.shard == due.shard,
                                   crls.c.der_number < number)
                .values(der=der, der_number=number, this_update=this_update, next_update=next_update,
                        entries=entries)).rowcount == 1

    def get(self, ident: str, shard: int) -> Published | None:
        """The CRL served for (issuer id, shard): one primary-key lookup."""
        with self.db.transaction(write=False) as conn:
            row = conn.execute(_GET, {"b_id": ident, "b_shard": shard}).first()
        if row is None or row.der is None:
            return None
        return Published(row.der, row.der_number, utc(row.this_update), utc(row.next_update))  # type: ignore[arg-type]

    def rows(self) -> list[tuple[str, int, int, int]]:
        """(issuer id, shard, number, CRL number served) of every row, for tests and reports."""
        with self.db.transaction(write=False) as conn:
            return [tuple(r) for r in conn.execute(select(crls.c.issuer_id, crls.c.shard, crls.c.number,
                                                          crls.c.der_number).order_by(crls.c.issuer_id,
                                                                                      crls.c.shard))]


def _due(period: int, stale_before: datetime, dirty_before: datetime) -> ColumnElement[bool]:
    return or_(crls.c.period < period, crls.c.dirty_at <= dirty_before,
               and_(crls.c.der_number < crls.c.number, crls.c.claimed_at < stale_before))


_DIRTY = (update(crls).where(crls.c.issuer_id == bindparam("b_id"), crls.c.shard == bindparam("b_shard"))
          .values(dirty_at=func.coalesce(crls.c.dirty_at, bindparam("b_now"))))  # the first mark counts
_ENTRIES = (select(certificates.c.serial, certificates.c.revoked_at, certificates.c.revocation_reason)
            .where(certificates.c.issuer_sha256 == bindparam("b_issuer"),
                   certificates.c.crl_shard == bindparam("b_shard"),
                   # A literal, not a parameter: the partial index's condition must be provable from it.
                   certificates.c.status == literal_column("'revoked'"),
                   certificates.c.not_after > bindparam("b_now")))
_GET = (select(crls.c.der, crls.c.der_number, crls.c.this_update, crls.c.next_update)
        .where(crls.c.issuer_id == bindparam("b_id"), crls.c.shard == bindparam("b_shard")))
