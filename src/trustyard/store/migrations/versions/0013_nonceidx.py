"""Nonces by client: only those handed out without authentication (``retry = 1``) in the index.

The index serves one query, the trim of a client's unspent unauthenticated nonces
(``AcmeStore._trim_nonces``, ``... WHERE source = ? AND retry = 1``). Every ACME POST redeems a
nonce by rewriting its row (new nonce, new expiry, ``retry = 0``); with every row in the index
each rewrite also moved an index entry, about two of the five pages each commit wrote to the
WAL. A partial index leaves those rows out.

Revision ID: 0013_nonceidx
Revises: 0011_emergencies
"""

import sqlalchemy as sa
from alembic import op

revision = "0013_nonceidx"
down_revision = "0012_redemption_retry"
branch_labels = None
depends_on = None

_RETRY = sa.text("retry = 1")


def upgrade() -> None:
    op.drop_index("ix_acme_nonces_source", "acme_nonces")
    op.create_index("ix_acme_nonces_source", "acme_nonces", ["source", "expires_at"],
                    sqlite_where=_RETRY, postgresql_where=_RETRY)


def downgrade() -> None:
    op.drop_index("ix_acme_nonces_source", "acme_nonces")
    op.create_index("ix_acme_nonces_source", "acme_nonces", ["source", "expires_at"])
