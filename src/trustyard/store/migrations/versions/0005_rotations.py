"""CA rotation as a journal: one row per rotation with its state, the time it entered each
state, its deadlines and the material it made; and the issuer of every certificate, so the
retiring gate can count what an old intermediate still vouches for.

Revision ID: 0005_rotations
Revises: 0004_lineage
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_rotations"
down_revision = "0004_lineage"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "rotations",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("prepared_at", _TS, nullable=True),
        sa.Column("published_at", _TS, nullable=True),
        sa.Column("adopted_at", _TS, nullable=True),
        sa.Column("active_at", _TS, nullable=True),
        sa.Column("retiring_at", _TS, nullable=True),
        sa.Column("retired_at", _TS, nullable=True),
        sa.Column("rolled_back_at", _TS, nullable=True),
        sa.Column("deadline_at", _TS, nullable=True),
        sa.Column("bundle_version", sa.BigInteger, nullable=True),
        sa.Column("old_intermediate_sha256", sa.String(64), nullable=False),
        sa.Column("old_root_sha256", sa.String(64), nullable=False),
        sa.Column("new_intermediate_sha256", sa.String(64), nullable=True),
        sa.Column("new_root_sha256", sa.String(64), nullable=True),
        sa.Column("cross_sha256", sa.String(64), nullable=True),
        sa.Column("paths", sa.Text, nullable=False),
        sa.Column("forced_laggards", sa.Text, nullable=False, server_default="[]"),
    )
    op.create_index("ix_rotations_state", "rotations", ["state"])
    with op.batch_alter_table("certificates") as batch:
        batch.add_column(sa.Column("issuer_sha256", sa.String(64), nullable=True))
    op.create_index("ix_certificates_issuer", "certificates", ["issuer_sha256", "status", "not_after"])


def downgrade() -> None:
    op.drop_index("ix_certificates_issuer", "certificates")
    with op.batch_alter_table("certificates") as batch:
        batch.drop_column("issuer_sha256")
    op.drop_index("ix_rotations_state", "rotations")
    op.drop_table("rotations")
