"""refunded payments: what each payment has given back as wallet credit, the row its refunds lock

Revision ID: 0012
Revises: 0010

Refunds to wallet credit made before this revision are summed per (customer, payment) into a
row of source "unknown" with no known payment amount; the next refund of such a payment looks
the payment up and records its amount then, so what was refunded before still counts.
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "refunded_payments",
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("payment_id", sa.String(length=255), nullable=False),
        sa.Column("source", sa.String(length=8), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("payment_amount", sa.BigInteger(), nullable=True),
        sa.Column("refunded_amount", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "payment_amount >= 0", name=op.f("ck_refunded_payments_payment_amount_non_negative")
        ),
        sa.CheckConstraint(
            "payment_amount IS NULL OR refunded_amount <= payment_amount",
            name=op.f("ck_refunded_payments_refunded_le_payment"),
        ),
        sa.CheckConstraint(
            "refunded_amount >= 0", name=op.f("ck_refunded_payments_refunded_non_negative")
        ),
        sa.CheckConstraint(
            "source IN ('charge', 'topup', 'inbox', 'unknown')",
            name=op.f("ck_refunded_payments_source_valid"),
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.customer_id"],
            name=op.f("fk_refunded_payments_customer_id_customers"),
        ),
        sa.PrimaryKeyConstraint("customer_id", "payment_id", name=op.f("pk_refunded_payments")),
    )
    op.execute(
        "INSERT INTO refunded_payments (customer_id, payment_id, source, currency,"
        " payment_amount, refunded_amount, created_at, updated_at)"
        " SELECT customer_id, reference_object_id, 'unknown', MIN(currency), NULL, SUM(amount),"
        " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP FROM ledger_entries"
        " WHERE event_type = 'refund' AND key_scope = 'system'"
        " AND substr(idempotency_key, 1, 14) = 'wallet_refund:'"
        " AND reference_object_id IS NOT NULL"
        " GROUP BY customer_id, reference_object_id"
    )


def downgrade() -> None:
    op.drop_table("refunded_payments")
