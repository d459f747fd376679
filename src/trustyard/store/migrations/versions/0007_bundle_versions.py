"""The trust bundle's versions: one row per distinct bundle the CA has served, numbered 1, 2, ...

The primary key on ``version`` is what keeps two replicas that publish at once from both
claiming the same number (``ca/bundle.py`` retries on the conflict).

Revision ID: 0007_bundle_versions
Revises: 0006_fleet
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_bundle_versions"
down_revision = "0006_fleet"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bundle_versions",
        sa.Column("version", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
                  autoincrement=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("pem", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("bundle_versions")
