"""Emergency replacement: one row per `trustyard emergency` (``emergencies``) and one per
certificate it replaces (``emergency_certs``): its key (blocked from issuance), its grace
deadline, what replaced it and the revocation claim that lets one replica revoke it.

Revision ID: 0010_emergencies
Revises: 0009_crls
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_emergencies"
down_revision = "0009_crls"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "emergencies",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("selector", sa.Text, nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("grace_seconds", sa.Integer, nullable=False),
        sa.Column("require_bootstrap", sa.Integer, nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
    )
    op.create_table(
        "emergency_certs",
        sa.Column("serial", sa.String(40), primary_key=True),
        sa.Column("emergency_id", sa.Integer, nullable=False),
        sa.Column("identity", sa.String(255), nullable=False),
        sa.Column("sans", sa.Text, nullable=False),
        sa.Column("provisioner", sa.String(128), nullable=False),
        sa.Column("spki_sha256", sa.String(64), nullable=False),
        sa.Column("fleet", sa.Integer, nullable=False),
        sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("replacement", sa.String(40), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("token_jti", sa.String(128), nullable=True),
    )
    op.create_index("ix_emergency_certs_spki", "emergency_certs", ["spki_sha256"])
    op.create_index("ix_emergency_certs_emergency", "emergency_certs", ["emergency_id", "state"])
    op.create_index("ix_emergency_certs_deadline", "emergency_certs", ["state", "deadline_at"])
    op.create_index("ix_emergency_certs_token", "emergency_certs", ["token_jti"])


def downgrade() -> None:
    op.drop_table("emergency_certs")
    op.drop_table("emergencies")
