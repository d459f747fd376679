"""The fleet: one row per relying party that checks in (``relying_parties``).

Revision ID: 0006_fleet
Revises: 0005_rotations
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_fleet"
down_revision = "0005_rotations"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "relying_parties",
        sa.Column("party", sa.String(320), primary_key=True),
        sa.Column("identity", sa.String(255), nullable=False),
        sa.Column("instance", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("serial", sa.String(40), nullable=False),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("bundle_version", sa.BigInteger, nullable=True),
        sa.Column("bundle_sha256", sa.String(64), nullable=True),
        sa.Column("endpoint_serial", sa.String(40), nullable=True),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("agent_version", sa.String(64), nullable=False),
        sa.Column("interval_seconds", sa.Integer, nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_checkin", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_jti", sa.String(128), nullable=True),
        sa.Column("renew_after", sa.DateTime(timezone=True), nullable=True),
        sa.Column("renew_serial", sa.String(40), nullable=True),
    )
    op.create_index("ix_relying_parties_last_checkin", "relying_parties", ["last_checkin"])
    op.create_index("ix_relying_parties_identity", "relying_parties", ["identity"])


def downgrade() -> None:
    op.drop_index("ix_relying_parties_identity", "relying_parties")
    op.drop_index("ix_relying_parties_last_checkin", "relying_parties")
    op.drop_table("relying_parties")
