"""Storage: the certificate ledger, one-time token redemptions and the hash-chained audit log.

``SqlStore`` is the one implementation (SQLite by default, PostgreSQL by URL); an
in-memory SQLite URL (``sqlite://``) serves tests that need no file.
"""

from .records import AuditEntry, AuditEvent, CertRecord, Intent
from .sql import SqlStore, open_store

__all__ = ["AuditEntry", "AuditEvent", "CertRecord", "Intent", "SqlStore", "open_store"]
