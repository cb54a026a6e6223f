"""low-balance scan indexes: wallets in the low state, customers with threshold overrides

Revision ID: 0006
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_wallets_low_currency_balance",
        "wallets",
        ["currency", "balance"],
        postgresql_where=sa.text("low_state = 'low'"),
        sqlite_where=sa.text("low_state = 'low'"),
    )
    op.create_index(
        "ix_customers_threshold_overrides",
        "customers",
        ["customer_id"],
        postgresql_where=sa.text("low_balance_thresholds IS NOT NULL"),
        sqlite_where=sa.text("low_balance_thresholds IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_customers_threshold_overrides", table_name="customers")
    op.drop_index("ix_wallets_low_currency_balance", table_name="wallets")
