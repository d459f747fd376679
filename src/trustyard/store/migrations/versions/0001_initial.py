"""The certificate ledger, token redemptions and the audit log.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "certificates",
        sa.Column("serial", sa.String(40), primary_key=True),
        sa.Column("provisioner", sa.String(128), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("sans", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("requested_at", _TS, nullable=False),
        sa.Column("not_before", _TS, nullable=False),
        sa.Column("not_after", _TS, nullable=False),
        sa.Column("der", sa.LargeBinary, nullable=True),
        sa.Column("fingerprint_sha256", sa.String(64), nullable=True),
        sa.Column("renewed_from", sa.String(40), nullable=True),
        sa.Column("token_jti", sa.String(128), nullable=True),
        sa.Column("revoked_at", _TS, nullable=True),
        sa.Column("revocation_reason", sa.String(64), nullable=True),
    )
    op.create_index("ix_certificates_status_not_after", "certificates", ["status", "not_after"])
    op.create_table(
        "used_tokens",
        sa.Column("jti", sa.String(128), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("used_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
    )
    op.create_table(
        "audit_log",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
                  autoincrement=False),
        sa.Column("at", _TS, nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(255), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )


def downgrade() -> None:
    for table in ("audit_head", "audit_log", "used_tokens", "certificates"):
        op.drop_table(table)
