"""An index on ``certificates.revoked_at``: every worker's OCSP responder asks for the
certificates revoked in the last seconds, once a second, and must not scan the ledger.

Revision ID: 0008_ocsp
Revises: 0007_bundle_versions
"""

from alembic import op

revision = "0008_ocsp"
down_revision = "0007_bundle_versions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_certificates_revoked_at", "certificates", ["revoked_at"])


def downgrade() -> None:
    op.drop_index("ix_certificates_revoked_at", table_name="certificates")
