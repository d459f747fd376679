"""What the OCSP responder reads of the ledger (``ca/ocsp.py``): one certificate's status by
serial, and the certificates revoked since a time (index ``ix_certificates_revoked_at``,
migration 0008), which every worker polls to drop the answers a revocation made wrong."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, func, select

from .engine import Database
from .records import utc
from .schema import certificates


@dataclass(frozen=True)
class LedgerStatus:
    status: str  # pending | issued | failed | revoked
    issuer_sha256: str | None
    revoked_at: datetime | None
    revocation_reason: str | None
    der: bytes | None  # read only to tell the issuer of a row from before the issuer column


_STATUS = select(certificates.c.status, certificates.c.issuer_sha256, certificates.c.revoked_at,
                 certificates.c.revocation_reason, certificates.c.der).where(
    certificates.c.serial == bindparam("serial_"))
_SINCE = (select(certificates.c.serial, certificates.c.revoked_at)
          .where(certificates.c.revoked_at > bindparam("since"))
          .order_by(certificates.c.revoked_at).limit(bindparam("limit_")))


def status(db: Database, serial: str) -> LedgerStatus | None:
    with db.transaction(write=False) as conn:
        row = db.run(conn, _STATUS, {"serial_": serial}).first()
    if row is None:
        return None
    return LedgerStatus(row.status, row.issuer_sha256, utc(row.revoked_at), row.revocation_reason,
                        None if row.issuer_sha256 else row.der)


_NEWEST = select(func.max(certificates.c.revoked_at).label("newest"))


def newest_revocation(db: Database) -> datetime | None:
    """The time of the latest revocation in the ledger (the index's last entry)."""
    with db.transaction(write=False) as conn:
        row = db.run(conn, _NEWEST).first()
    value = row.newest if row is not None else None
    return utc(datetime.fromisoformat(value) if isinstance(value, str) else value)


def revoked_since(db: Database, since: datetime, limit: int) -> list[tuple[str, datetime]]:
    """(serial, revoked_at) of up to ``limit`` certificates revoked after ``since``, oldest first."""
    with db.transaction(write=False) as conn:
        rows = db.run(conn, _SINCE, {"since": since, "limit_": limit}).fetchall()
    return [(r.serial, utc(r.revoked_at)) for r in rows]  # type: ignore[misc]
