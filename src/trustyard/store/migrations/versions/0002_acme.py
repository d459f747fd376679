"""ACME server state: nonces, accounts, orders, authorizations, challenges.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "acme_nonces",
        sa.Column("nonce", sa.String(32), primary_key=True),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("retry", sa.Integer, nullable=False),
    )
    op.create_table(
        "acme_accounts",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("provisioner", sa.String(128), nullable=False),
        sa.Column("thumbprint", sa.String(64), nullable=False),
        sa.Column("jwk", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("contact", sa.Text, nullable=False),
        sa.Column("eab_kid", sa.String(255), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_index("ux_acme_accounts_key", "acme_accounts", ["provisioner", "thumbprint"], unique=True)
    op.create_table(
        "acme_orders",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("account_id", sa.String(32), nullable=False),
        sa.Column("provisioner", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("identifiers", sa.Text, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("cert_serial", sa.String(40), nullable=True),
        sa.Column("replaces", sa.String(255), nullable=True),
    )
    op.create_index("ix_acme_orders_account", "acme_orders", ["account_id"])
    op.create_index("ix_acme_orders_cert", "acme_orders", ["cert_serial"])
    op.create_table(
        "acme_authzs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("order_id", sa.String(32), nullable=False),
        sa.Column("account_id", sa.String(32), nullable=False),
        sa.Column("type", sa.String(8), nullable=False),
        sa.Column("value", sa.String(255), nullable=False),
        sa.Column("wildcard", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
    )
    op.create_index("ix_acme_authzs_order", "acme_authzs", ["order_id"])
    op.create_index("ix_acme_authzs_account_value", "acme_authzs", ["account_id", "value"])
    op.create_table(
        "acme_challenges",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("authz_id", sa.String(32), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("token", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("validated_at", _TS, nullable=True),
        sa.Column("started_at", _TS, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
    )
    op.create_index("ix_acme_challenges_authz", "acme_challenges", ["authz_id"])


def downgrade() -> None:
    for table in ("acme_challenges", "acme_authzs", "acme_orders", "acme_accounts", "acme_nonces"):
        op.drop_table(table)
