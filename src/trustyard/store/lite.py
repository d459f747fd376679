"""The ledger and audit log of a SQLite home on the standard library's ``sqlite3`` alone.

``trustyard token`` appends one audit entry and ``trustyard list --home`` reads the
certificates; with ``SqlStore`` each would spend most of its time importing SQLAlchemy.
``LiteStore`` does exactly those two things, the way ``SqlStore`` does them, so that the
database cannot tell which one wrote:

- an entry is ``audit.next_entry`` (the one definition of what an entry holds and how it is
  hashed) stored with times in SQLAlchemy's SQLite form (``stored_time``);
- a write takes the engine's write lock (the ``flock`` on ``<db>.lock``), then
  ``BEGIN IMMEDIATE`` on a WAL connection with ``synchronous=NORMAL`` and a 30 s busy
  timeout; after COMMIT and the lock's release it flushes the WAL file, then moves the
  signed checkpoint (``AuditSeal``), as ``Database.transaction`` does for a durable write.

Anything else a ledger does (a refusal counted in aggregate, on an unknown provisioner)
goes to a ``SqlStore`` opened on the same file when first needed. PostgreSQL homes never
come here (``ca.home.open_home_store``).

The column names are ``schema.py``'s (the SQLAlchemy tables); ``tests/test_lite_store.py``
holds the two lists below to them.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections import namedtuple
from datetime import datetime
from typing import TYPE_CHECKING

from ..files import fsync_if_present
from . import audit as chain
from .records import AuditEvent, CertRecord, cert_record, utc_now
from .seal import AuditSeal

if TYPE_CHECKING:
    from .sql import SqlStore

CERTIFICATE_COLUMNS = ("serial", "provisioner", "subject", "sans", "status", "requested_at", "not_before",
                       "not_after", "der", "fingerprint_sha256", "renewed_from", "token_jti", "revoked_at",
                       "revocation_reason", "superseded_by", "issuer_sha256", "crl_shard", "spki_sha256")
AUDIT_COLUMNS = ("seq", "at", "actor", "action", "target", "outcome", "detail", "prev_hash", "hash")
_CERTIFICATE_TIMES = frozenset({"requested_at", "not_before", "not_after", "revoked_at"})
_CertRow = namedtuple("_CertRow", CERTIFICATE_COLUMNS)  # type: ignore[misc]

_PREFIX = "sqlite:///"


def sqlite_file(url: str) -> str | None:
    """The database file of a SQLite URL (as ``Database`` names it, for the lock file), or None
    for anything else: PostgreSQL, in-memory SQLite, a URL with options."""
    if not url.startswith(_PREFIX) or "?" in url:
        return None
    path = url[len(_PREFIX):]
    return None if path in ("", ":memory:") else path


def stored_time(value: datetime) -> str:
    """A time as SQLAlchemy's ``DateTime`` stores it in SQLite: the wall time as given (the
    store writes UTC), to the microsecond, without a zone."""
    return (f"{value.year:04d}-{value.month:02d}-{value.day:02d} "
            f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}.{value.microsecond:06d}")


def read_time(text: str | None) -> datetime | None:
    """A stored time back, naive, as SQLAlchemy reads it (``records.utc`` makes it UTC)."""
    return None if text is None else datetime.fromisoformat(text)


class LiteStore:
    """Appends audit entries to and lists the ledger of one SQLite file, without SQLAlchemy."""

    def __init__(self, path: str, seal: AuditSeal | None = None) -> None:
        self.path = path
        self.seal = seal
        self._db: sqlite3.Connection | None = None
        self._full: SqlStore | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)  # BEGIN is ours
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # the WAL is flushed after COMMIT, as the engine does
            db.execute("PRAGMA busy_timeout=30000")
            self._db = db
        return self._db

    # -- the audit log --------------------------------------------------------------------------

    def audit(self, event_: AuditEvent) -> None:
        """Append one entry, durably, and move the signed checkpoint to it."""
        db = self._connection()
        fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # the engine's write lock: writers queue here, not in SQLite
            db.execute("BEGIN IMMEDIATE")
            try:
                seq, digest = self._append(db, event_)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        finally:
            os.close(fd)  # releases the flock
        self._flush_wal()
        if self.seal is not None:
            self.seal.note(seq, digest)
            self.seal.publish()

    def _append(self, db: sqlite3.Connection, event_: AuditEvent) -> tuple[int, str]:
        head = db.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
        if head is None:  # a log never appended to; we hold the write lock, so no one races us
            db.execute("INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, ?)", (chain.GENESIS,))
            head = (0, chain.GENESIS)
        key = self.seal.ensure(*head)[0] if self.seal is not None else None
        entry = chain.next_entry(head[0], head[1], event_, utc_now(), key)
        entry["at"] = stored_time(entry["at"])
        db.execute(f"INSERT INTO audit_log ({', '.join(AUDIT_COLUMNS)}) VALUES ({', '.join('?' * len(AUDIT_COLUMNS))})",
                   [entry[c] for c in AUDIT_COLUMNS])
        db.execute("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", (entry["seq"], entry["hash"]))
        return entry["seq"], entry["hash"]

    def _flush_wal(self) -> None:
        fsync_if_present(f"{self.path}-wal")

    # -- the ledger ------------------------------------------------------------------------------

    def list(self, status: str | None = None, limit: int = 100, offset: int = 0) -> list[CertRecord]:
        """As ``SqlStore.list``: oldest request first, then by serial."""
        where, params = (" WHERE status = ?", [status]) if status else ("", [])
        rows = self._connection().execute(
            f"SELECT {', '.join(CERTIFICATE_COLUMNS)} FROM certificates{where} "
            "ORDER BY requested_at, serial LIMIT ? OFFSET ?", [*params, limit, offset]).fetchall()
        return [cert_record(_CertRow(*(read_time(v) if c in _CERTIFICATE_TIMES else v
                                       for c, v in zip(CERTIFICATE_COLUMNS, row, strict=True)))) for row in rows]

    # -- the rest, on the SQL engine ----------------------------------------------------------------

    def note_refusal(self, source: str, reason: str, message: str = "") -> None:
        self._sql().note_refusal(source, reason, message=message)

    def _sql(self) -> SqlStore:
        if self._full is None:
            from .sql import open_store

            self._full = open_store(_PREFIX + self.path, migrate=False, seal=self.seal)
        return self._full

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._full is not None:
            self._full.close()
            self._full = None
