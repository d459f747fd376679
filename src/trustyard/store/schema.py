"""The tables. Migrations (``migrations/versions``) create and change them; this module
is what the code reads and writes through."""

from __future__ import annotations

from sqlalchemy import (BigInteger, Column, DateTime, Index, Integer, LargeBinary, MetaData, String,
                        Table, Text)

metadata = MetaData()

certificates = Table(
    "certificates", metadata,
    Column("serial", String(40), primary_key=True),  # hex; the PRIMARY KEY is the UNIQUE reservation
    Column("provisioner", String(128), nullable=False),
    Column("subject", String(255), nullable=False),
    Column("sans", Text, nullable=False),  # JSON list
    Column("status", String(16), nullable=False),
    Column("requested_at", DateTime(timezone=True), nullable=False),
    Column("not_before", DateTime(timezone=True), nullable=False),
    Column("not_after", DateTime(timezone=True), nullable=False),
    Column("der", LargeBinary, nullable=True),
    Column("fingerprint_sha256", String(64), nullable=True),
    Column("renewed_from", String(40), nullable=True),
    Column("token_jti", String(128), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("revocation_reason", String(64), nullable=True),
    Index("ix_certificates_status_not_after", "status", "not_after"),
)

used_tokens = Table(
    "used_tokens", metadata,
    Column("jti", String(128), primary_key=True),  # a second redemption violates the key: replay
    Column("kind", String(16), nullable=False),
    Column("used_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

audit_log = Table(
    "audit_log", metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(255), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", String(255), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("detail", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)

audit_head = Table(
    "audit_head", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
)
