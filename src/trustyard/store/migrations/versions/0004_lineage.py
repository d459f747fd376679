"""Renewal lineage: a certificate is renewed once, and its renewal is found from it.

``superseded_by`` names the certificate that renewed this one (claimed when the renewal's
intent is recorded, released if the signing fails); ``renewed_from`` gets an index so a
key-compromise revocation can walk every descendant.

Revision ID: 0004_lineage
Revises: 0003_acmefair
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_lineage"
down_revision = "0003_acmefair"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("certificates") as batch:
        batch.add_column(sa.Column("superseded_by", sa.String(40), nullable=True))
    op.create_index("ix_certificates_renewed_from", "certificates", ["renewed_from"])
    # Certificates renewed before this revision: superseded by their newest renewal.
    op.execute(sa.text(
        "UPDATE certificates SET superseded_by = (SELECT child.serial FROM certificates child "
        "WHERE child.renewed_from = certificates.serial AND child.status IN ('issued', 'revoked') "
        "ORDER BY child.requested_at DESC, child.serial DESC LIMIT 1)"))


def downgrade() -> None:
    op.drop_index("ix_certificates_renewed_from", "certificates")
    with op.batch_alter_table("certificates") as batch:
        batch.drop_column("superseded_by")
