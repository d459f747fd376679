"""The trust bundle's versions (table ``bundle_versions``, migration 0007): read the newest,
and add the next one when its content differs. ``ca/bundle.py`` decides what the content is."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from .engine import Database
from .records import utc
from .schema import bundle_versions

ATTEMPTS = 20


@dataclass(frozen=True)
class BundleRow:
    version: int
    sha256: str
    pem: str
    created_at: datetime


_LATEST = select(bundle_versions).order_by(bundle_versions.c.version.desc()).limit(1)


def latest(db: Database) -> BundleRow | None:
    with db.transaction(write=False) as conn:
        row = conn.execute(_LATEST).first()
    return _row(row) if row is not None else None


def record(db: Database, sha256: str, pem: str, now: datetime | None = None) -> BundleRow:
    """The newest version, after adding one for ``pem`` unless the newest already has ``sha256``.

    The read and the insert share a transaction; on PostgreSQL two writers can still read the
    same newest version, and the second insert then violates the primary key: it reads again
    and finds either its own content (another replica published it: that version is the
    answer) or another one (it claims the number after)."""
    for _ in range(ATTEMPTS):
        try:
            with db.transaction() as conn:
                row = conn.execute(_LATEST).first()
                if row is not None and row.sha256 == sha256:
                    return _row(row)
                version = (row.version if row is not None else 0) + 1
                created = now or datetime.now(UTC)
                conn.execute(insert(bundle_versions).values(version=version, sha256=sha256, pem=pem,
                                                            created_at=created))
            return BundleRow(version, sha256, pem, created)
        except IntegrityError:
            continue
    raise RuntimeError(f"could not record the trust bundle's version after {ATTEMPTS} conflicts")


def _row(row: object) -> BundleRow:
    return BundleRow(int(row.version), row.sha256, row.pem, utc(row.created_at))  # type: ignore[attr-defined, arg-type]
