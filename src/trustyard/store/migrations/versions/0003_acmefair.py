"""Unauthenticated traffic in bounded rows: refusals counted per interval, source and reason;
nonces tagged with the client they were minted for.

Revision ID: 0003_acmefair
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_acmefair"
down_revision = "0002"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("acme_nonces") as batch:
        batch.add_column(sa.Column("source", sa.String(64), nullable=False, server_default=""))
    op.create_index("ix_acme_nonces_source", "acme_nonces", ["source", "expires_at"])
    op.create_table(
        "refusals",
        sa.Column("interval_start", _TS, primary_key=True),
        sa.Column("source", sa.String(64), primary_key=True),
        sa.Column("reason", sa.String(96), primary_key=True),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.Column("last_at", _TS, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("refusals")
    op.drop_index("ix_acme_nonces_source", "acme_nonces")
    with op.batch_alter_table("acme_nonces") as batch:
        batch.drop_column("source")
