"""Idempotent token redemption: each certificate row keeps its CSR key (``spki_sha256``), and
rows are found by the bootstrap token that bought them (``ix_certificates_token_jti``), so a
client whose redemption was cut (a crash, a lost answer) gets the certificate back by sending
the same token and a CSR of the same key again. Rows from before this revision have no key:
their token stays spent. ACME orders record when their finalize began
(``finalize_started_at``), so one a crash left ``processing`` can be released.

Revision ID: 0012_redemption_retry
Revises: 0011_emergencies
"""

import sqlalchemy as sa
from alembic import op

revision = "0012_redemption_retry"
down_revision = "0011_emergencies"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("certificates") as batch:
        batch.add_column(sa.Column("spki_sha256", sa.String(64), nullable=True))
    op.create_index("ix_certificates_token_jti", "certificates", ["token_jti"])
    with op.batch_alter_table("acme_orders") as batch:
        batch.add_column(sa.Column("finalize_started_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("acme_orders") as batch:
        batch.drop_column("finalize_started_at")
    op.drop_index("ix_certificates_token_jti", "certificates")
    with op.batch_alter_table("certificates") as batch:
        batch.drop_column("spki_sha256")
