"""wallet charges: remember allow_partial so a retry must ask for the same thing

Revision ID: 0008
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing charges (none before this feature) count as partial-allowed, the API default.
    with op.batch_alter_table("wallet_charges", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("allow_partial", sa.Boolean(), server_default=sa.true(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("wallet_charges", schema=None) as batch_op:
        batch_op.drop_column("allow_partial")
