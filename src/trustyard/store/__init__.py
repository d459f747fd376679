"""Storage: the certificate ledger, one-time token redemptions and the hash-chained audit log.

``Database`` (``engine``) is the SQL engine: transactions, units, the durable flush, the write
lock. ``SqlStore`` (the ledger and the audit log) and ``AcmeStore`` (the ACME server's state)
sit on its public API. SQLite by default, PostgreSQL by URL; an in-memory SQLite URL
(``sqlite://``) serves tests that need no file. ``LiteStore`` (``lite``) is the standard
library's ``sqlite3`` alone, for the local commands that only mint a token or read the ledger.

The SQLAlchemy parts load when first named, so that importing this package (for its records)
costs a command that never opens the SQL engine nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .records import AuditEntry, AuditEvent, CertRecord, Intent, SerialCollision, superseded

if TYPE_CHECKING:
    from .engine import Database, deferred_flush
    from .sql import SqlStore, open_store

_LAZY = {"Database": ".engine", "deferred_flush": ".engine", "SqlStore": ".sql", "open_store": ".sql"}

__all__ = ["AuditEntry", "AuditEvent", "CertRecord", "Database", "Intent", "SerialCollision", "SqlStore",
           "deferred_flush", "open_store", "superseded"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
