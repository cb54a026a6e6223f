"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-26 21:47:40.382665
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    op.create_table(
        "customers",
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("business_id", sa.String(length=64), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("email_normalized", sa.String(length=320), nullable=False),
        sa.Column("name", sa.String(length=500), nullable=False),
        sa.Column("phone_number", sa.String(length=64), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("low_balance_thresholds", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("customer_id", name=op.f("pk_customers")),
        sa.UniqueConstraint("email_normalized", name=op.f("uq_customers_email_normalized")),
    )
    op.create_table(
        "inbox_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("provider_event_id", sa.String(length=255), nullable=False),
        sa.Column("event_type", sa.String(length=128), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'processed', 'failed', 'ignored')",
            name=op.f("ck_inbox_events_status_valid"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbox_events")),
        sa.UniqueConstraint(
            "provider", "provider_event_id", name=op.f("uq_inbox_events_provider_provider_event_id")
        ),
    )
    with op.batch_alter_table("inbox_events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_inbox_events_status_received", ["status", "received_at"], unique=False
        )

    op.create_table(
        "outbox_messages",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("endpoint_id", sa.String(length=64), nullable=True),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'delivered', 'failed')",
            name=op.f("ck_outbox_messages_status_valid"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_messages")),
    )
    with op.batch_alter_table("outbox_messages", schema=None) as batch_op:
        batch_op.create_index(
            "ix_outbox_messages_status_next", ["status", "next_attempt_at"], unique=False
        )

    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("secret", sa.String(length=255), nullable=False),
        sa.Column("events", sa.Text(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_endpoints")),
    )
    op.create_table(
        "delivery_attempts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("message_id", sa.String(length=64), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["outbox_messages.id"],
            name=op.f("fk_delivery_attempts_message_id_outbox_messages"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delivery_attempts")),
    )
    with op.batch_alter_table("delivery_attempts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_delivery_attempts_message_id"), ["message_id"], unique=False
        )

    op.create_table(
        "usage_events",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("event_name", sa.String(length=255), nullable=False),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("cost_scaled", sa.BigInteger(), nullable=True),
        sa.Column("unbilled_amount", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("ledger_entry_id", sa.String(length=64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'processed', 'unbilled', 'unpriced', 'invalid')",
            name=op.f("ck_usage_events_status_valid"),
        ),
        sa.CheckConstraint(
            "unbilled_amount >= 0", name=op.f("ck_usage_events_unbilled_non_negative")
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.customer_id"],
            name=op.f("fk_usage_events_customer_id_customers"),
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_usage_events")),
        sa.UniqueConstraint("event_id", name=op.f("uq_usage_events_event_id")),
    )
    with op.batch_alter_table("usage_events", schema=None) as batch_op:
        batch_op.create_index("ix_usage_events_customer_seq", ["customer_id", "seq"], unique=False)
        batch_op.create_index("ix_usage_events_status_seq", ["status", "seq"], unique=False)

    op.create_table(
        "wallet_charges",
        sa.Column("charge_id", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("order_id", sa.String(length=255), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("requested_amount", sa.BigInteger(), nullable=False),
        sa.Column("applied_amount", sa.BigInteger(), nullable=False),
        sa.Column("reversed_amount", sa.BigInteger(), nullable=False),
        sa.Column("ledger_entry_id", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "applied_amount <= requested_amount",
            name=op.f("ck_wallet_charges_applied_le_requested"),
        ),
        sa.CheckConstraint(
            "applied_amount >= 0", name=op.f("ck_wallet_charges_applied_non_negative")
        ),
        sa.CheckConstraint(
            "reversed_amount <= applied_amount", name=op.f("ck_wallet_charges_reversed_le_applied")
        ),
        sa.CheckConstraint(
            "reversed_amount >= 0", name=op.f("ck_wallet_charges_reversed_non_negative")
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.customer_id"],
            name=op.f("fk_wallet_charges_customer_id_customers"),
        ),
        sa.PrimaryKeyConstraint("charge_id", name=op.f("pk_wallet_charges")),
        sa.UniqueConstraint(
            "customer_id",
            "idempotency_key",
            name=op.f("uq_wallet_charges_customer_id_idempotency_key"),
        ),
    )
    op.create_table(
        "wallets",
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("balance", sa.BigInteger(), nullable=False),
        sa.Column("pending_usage_scaled", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("low_state", sa.String(length=10), server_default="unarmed", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "low_state IN ('unarmed', 'normal', 'low')", name=op.f("ck_wallets_low_state_valid")
        ),
        sa.CheckConstraint("balance >= 0", name=op.f("ck_wallets_balance_non_negative")),
        sa.CheckConstraint(
            "balance <= 9007199254740991", name=op.f("ck_wallets_balance_json_safe")
        ),
        sa.CheckConstraint(
            "pending_usage_scaled >= 0", name=op.f("ck_wallets_pending_usage_non_negative")
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.customer_id"],
            name=op.f("fk_wallets_customer_id_customers"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("customer_id", "currency", name=op.f("pk_wallets")),
    )
    with op.batch_alter_table("wallets", schema=None) as batch_op:
        batch_op.create_index("ix_wallets_currency_balance", ["currency", "balance"], unique=False)

    op.create_table(
        "ledger_entries",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("business_id", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("is_credit", sa.Boolean(), nullable=False),
        sa.Column("before_balance", sa.BigInteger(), nullable=False),
        sa.Column("after_balance", sa.BigInteger(), nullable=False),
        sa.Column("event_type", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("reference_object_id", sa.String(length=255), nullable=True),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "event_type IN ('payment', 'payment_reversal', 'refund', 'refund_reversal', 'dispute', 'dispute_reversal', 'merchant_adjustment', 'usage', 'expiration')",
            name=op.f("ck_ledger_entries_event_type_valid"),
        ),
        sa.CheckConstraint(
            "(is_credit AND after_balance = before_balance + amount) OR (NOT is_credit AND after_balance = before_balance - amount)",
            name=op.f("ck_ledger_entries_balance_chain"),
        ),
        sa.CheckConstraint(
            "after_balance >= 0", name=op.f("ck_ledger_entries_after_balance_non_negative")
        ),
        sa.CheckConstraint("amount > 0", name=op.f("ck_ledger_entries_amount_positive")),
        sa.ForeignKeyConstraint(
            ["customer_id", "currency"],
            ["wallets.customer_id", "wallets.currency"],
            name="fk_ledger_entries_wallet",
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_ledger_entries")),
        sa.UniqueConstraint(
            "customer_id",
            "idempotency_key",
            name=op.f("uq_ledger_entries_customer_id_idempotency_key"),
        ),
        sa.UniqueConstraint("id", name=op.f("uq_ledger_entries_id")),
    )
    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_ledger_entries_customer_seq", ["customer_id", "seq"], unique=False
        )
        batch_op.create_index("ix_ledger_entries_reference", ["reference_object_id"], unique=False)
        batch_op.create_index(
            "ix_ledger_entries_wallet_seq", ["customer_id", "currency", "seq"], unique=False
        )

    _create_immutability_guards()


def downgrade() -> None:
    _drop_immutability_guards()

    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.drop_index("ix_ledger_entries_wallet_seq")
        batch_op.drop_index("ix_ledger_entries_reference")
        batch_op.drop_index("ix_ledger_entries_customer_seq")

    op.drop_table("ledger_entries")
    with op.batch_alter_table("wallets", schema=None) as batch_op:
        batch_op.drop_index("ix_wallets_currency_balance")

    op.drop_table("wallets")
    op.drop_table("wallet_charges")
    with op.batch_alter_table("usage_events", schema=None) as batch_op:
        batch_op.drop_index("ix_usage_events_status_seq")
        batch_op.drop_index("ix_usage_events_customer_seq")

    op.drop_table("usage_events")
    with op.batch_alter_table("delivery_attempts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_delivery_attempts_message_id"))

    op.drop_table("delivery_attempts")
    op.drop_table("webhook_endpoints")
    with op.batch_alter_table("outbox_messages", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_messages_status_next")

    op.drop_table("outbox_messages")
    with op.batch_alter_table("inbox_events", schema=None) as batch_op:
        batch_op.drop_index("ix_inbox_events_status_received")

    op.drop_table("inbox_events")
    op.drop_table("customers")
    op.drop_table("api_keys")


# Ledger entries are append-only: the database refuses UPDATE and DELETE, so no code path,
# operator or bug can rewrite history. Corrections are new entries.
_PG_GUARD = """
CREATE FUNCTION ledger_entries_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger entries are immutable';
END $$;
CREATE TRIGGER ledger_entries_no_update BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_entries_immutable();
"""


def _create_immutability_guards() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_GUARD)
    else:
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER ledger_entries_no_{action.lower()} BEFORE {action} "
                "ON ledger_entries BEGIN SELECT RAISE(ABORT, 'ledger entries are immutable'); END"
            )


def _drop_immutability_guards() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS ledger_entries_no_update ON ledger_entries")
        op.execute("DROP FUNCTION IF EXISTS ledger_entries_immutable()")
    else:
        op.execute("DROP TRIGGER IF EXISTS ledger_entries_no_update")
        op.execute("DROP TRIGGER IF EXISTS ledger_entries_no_delete")
