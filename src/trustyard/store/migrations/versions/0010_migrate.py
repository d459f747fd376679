"""Migrating off self-signed certificates: one row per service boundary (``migrate_boundaries``)
and the journal of each step's file writes (``migrate_journal``), so a step interrupted between
two writes is completed or rolled back from what was recorded before the first one.

Revision ID: 0010_migrate
Revises: 0009_crls
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_migrate"
down_revision = "0009_crls"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "migrate_boundaries",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("spki_sha256", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("plan", sa.Text, nullable=False),
        sa.Column("rank", sa.Integer, nullable=False),
        sa.Column("blocking", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("moved_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "migrate_journal",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("boundary_id", sa.String(16), nullable=False),
        sa.Column("step", sa.String(16), nullable=False),
        sa.Column("from_state", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("writes", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_migrate_journal_boundary", "migrate_journal", ["boundary_id", "seq"])


def downgrade() -> None:
    op.drop_index("ix_migrate_journal_boundary", "migrate_journal")
    op.drop_table("migrate_journal")
    op.drop_table("migrate_boundaries")
