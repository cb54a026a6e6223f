"""payment top-ups and their refunds (payment webhooks)

Revision ID: 0004
Revises: 0001
Create Date: 2026-11-26 21:54:29.943357
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "topup_payments",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("payment_id", sa.String(length=255), nullable=False),
        sa.Column("customer_id", sa.String(length=64), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("credited_amount", sa.BigInteger(), nullable=False),
        sa.Column("payment_amount", sa.BigInteger(), nullable=False),
        sa.Column("payment_currency", sa.String(length=3), nullable=False),
        sa.Column("reversed_amount", sa.BigInteger(), nullable=False),
        sa.Column("ledger_entry_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "credited_amount >= 0", name=op.f("ck_topup_payments_credited_non_negative")
        ),
        sa.CheckConstraint(
            "payment_amount >= 0", name=op.f("ck_topup_payments_payment_amount_non_negative")
        ),
        sa.CheckConstraint(
            "reversed_amount <= credited_amount",
            name=op.f("ck_topup_payments_reversed_le_credited"),
        ),
        sa.CheckConstraint(
            "reversed_amount >= 0", name=op.f("ck_topup_payments_reversed_non_negative")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_topup_payments")),
        sa.UniqueConstraint(
            "provider", "payment_id", name=op.f("uq_topup_payments_provider_payment_id")
        ),
    )
    op.create_table(
        "topup_refunds",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("refund_id", sa.String(length=255), nullable=False),
        sa.Column("payment_id", sa.String(length=255), nullable=False),
        sa.Column("refund_amount", sa.BigInteger(), nullable=False),
        sa.Column("share", sa.BigInteger(), nullable=False),
        sa.Column("debited", sa.BigInteger(), nullable=False),
        sa.Column("shortfall", sa.BigInteger(), nullable=False),
        sa.Column("ledger_entry_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("debited + shortfall = share", name=op.f("ck_topup_refunds_parts_sum")),
        sa.CheckConstraint(
            "debited >= 0 AND shortfall >= 0", name=op.f("ck_topup_refunds_parts_non_negative")
        ),
        sa.CheckConstraint(
            "refund_amount >= 0", name=op.f("ck_topup_refunds_refund_amount_non_negative")
        ),
        sa.CheckConstraint("share >= 0", name=op.f("ck_topup_refunds_share_non_negative")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_topup_refunds")),
        sa.UniqueConstraint(
            "provider", "refund_id", name=op.f("uq_topup_refunds_provider_refund_id")
        ),
    )
    with op.batch_alter_table("topup_refunds", schema=None) as batch_op:
        batch_op.create_index(
            "ix_topup_refunds_provider_payment", ["provider", "payment_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("topup_refunds", schema=None) as batch_op:
        batch_op.drop_index("ix_topup_refunds_provider_payment")

    op.drop_table("topup_refunds")
    op.drop_table("topup_payments")
