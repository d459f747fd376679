"""Storage: the certificate ledger, one-time token redemptions and the hash-chained audit log.

``Database`` (``engine``) is the SQL engine: transactions, units, the durable flush, the write
lock. ``SqlStore`` (the ledger and the audit log) and ``AcmeStore`` (the ACME server's state)
sit on its public API. SQLite by default, PostgreSQL by URL; an in-memory SQLite URL
(``sqlite://``) serves tests that need no file.
"""

from .engine import Database, deferred_flush
from .records import AuditEntry, AuditEvent, CertRecord, Intent, SerialCollision, superseded
from .sql import SqlStore, open_store

__all__ = ["AuditEntry", "AuditEvent", "CertRecord", "Database", "Intent", "SerialCollision", "SqlStore",
           "deferred_flush", "open_store", "superseded"]
