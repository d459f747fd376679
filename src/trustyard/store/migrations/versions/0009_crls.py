"""Revocation lists: each certificate's CRL shard (``certificates.crl_shard``, in a partial
index of revoked certificates that covers the shard's query) and one row per issuer and shard (``crls``):
the newest CRL every replica serves, and the claim that lets one replica generate it.

Revision ID: 0009_crls
Revises: 0008_ocsp
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_crls"
down_revision = "0008_ocsp"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("certificates") as batch:
        batch.add_column(sa.Column("crl_shard", sa.Integer, nullable=True))
    # Partial and covering: a shard's CRL entries are read from the index alone.
    where = sa.text("status = 'revoked' AND crl_shard IS NOT NULL")
    op.create_index("ix_certificates_crl", "certificates",
                    ["issuer_sha256", "crl_shard", "status", "not_after", "serial", "revoked_at", "revocation_reason"],
                    sqlite_where=where, postgresql_where=where)
    op.create_table(
        "crls",
        sa.Column("issuer_id", sa.String(16), primary_key=True),
        sa.Column("shard", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("issuer_sha256", sa.String(64), nullable=False),
        sa.Column("shards", sa.Integer, nullable=False),
        sa.Column("number", sa.BigInteger, nullable=False),
        sa.Column("period", sa.BigInteger, nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("dirty_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("der_number", sa.BigInteger, nullable=False),
        sa.Column("der", sa.LargeBinary, nullable=True),
        sa.Column("this_update", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_update", sa.DateTime(timezone=True), nullable=True),
        sa.Column("entries", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("crls")
    op.drop_index("ix_certificates_crl", "certificates")
    with op.batch_alter_table("certificates") as batch:
        batch.drop_column("crl_shard")
