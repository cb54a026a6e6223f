"""wallet holds (work in flight, disputes), top-up disputes, the wallet's held total and
depleted state

Revision ID: 0015
Revises: 0016

``wallet_holds`` reserves money on a wallet without a ledger entry; ``wallets.held`` is the
sum of the wallet's active holds, kept by the holds' trigger in the same statement that moves
a hold, so the available balance (balance - held) is read without summing. A hold's status
moves only from ``active``, once, to ``captured``, ``released`` or ``expired``; the trigger
refuses every other change and any DELETE (and, on PostgreSQL, any change of ``wallets.held``
not made by that trigger, and TRUNCATE, as for the ledger in 0014).

``topup_disputes`` records each provider dispute of a top-up and what it did (its hold, its
``dispute`` debit when lost).

``wallets.depleted`` records whether the available balance is 0 (``wallet.depleted`` fires
when it becomes true): existing wallets start in the state their balance says.
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0016"
branch_labels = None
depends_on = None

_IDENTITY = (
    "customer_id",
    "hold_id",
    "currency",
    "kind",
    "amount",
    "reason",
    "reference_object_id",
    "idempotency_key",
    "key_scope",
    "fingerprint",
    "expires_at",
    "actor",
    "created_at",
)

_PG_GUARDS = f"""
CREATE FUNCTION wallet_holds_moves() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'holds are never deleted';
    END IF;
    IF TG_OP = 'INSERT' THEN
        IF NEW.status <> 'active' THEN
            RAISE EXCEPTION 'a hold starts active';
        END IF;
        UPDATE wallets SET held = held + NEW.amount
        WHERE customer_id = NEW.customer_id AND currency = NEW.currency;
        RETURN NEW;
    END IF;
    IF OLD.status <> 'active' OR NEW.status = 'active'
       OR ({", ".join("NEW." + c for c in _IDENTITY)})
          IS DISTINCT FROM ({", ".join("OLD." + c for c in _IDENTITY)}) THEN
        RAISE EXCEPTION 'a hold only moves from active to captured, released or expired, once';
    END IF;
    UPDATE wallets SET held = held - OLD.amount
    WHERE customer_id = OLD.customer_id AND currency = OLD.currency;
    RETURN NEW;
END $$;
CREATE TRIGGER wallet_holds_moves BEFORE INSERT OR UPDATE OR DELETE ON wallet_holds
    FOR EACH ROW EXECUTE FUNCTION wallet_holds_moves();
CREATE FUNCTION wallets_held_by_holds() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'wallets.held changes only with the wallet''s holds';
END $$;
CREATE TRIGGER wallets_held_by_holds BEFORE UPDATE OF held ON wallets
    FOR EACH ROW WHEN (NEW.held IS DISTINCT FROM OLD.held AND pg_trigger_depth() = 0)
    EXECUTE FUNCTION wallets_held_by_holds();
CREATE TRIGGER wallet_holds_no_truncate BEFORE TRUNCATE ON wallet_holds
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_truncate();
"""  # noqa: S608 (column names, constants)

_SQLITE_GUARDS = (
    """CREATE TRIGGER wallet_holds_start_active BEFORE INSERT ON wallet_holds
    WHEN NEW.status <> 'active'
    BEGIN SELECT RAISE(ABORT, 'a hold starts active'); END""",
    """CREATE TRIGGER wallet_holds_held_on_insert AFTER INSERT ON wallet_holds
    BEGIN UPDATE wallets SET held = held + NEW.amount
          WHERE customer_id = NEW.customer_id AND currency = NEW.currency; END""",
    "CREATE TRIGGER wallet_holds_moves BEFORE UPDATE ON wallet_holds"  # noqa: S608
    " WHEN OLD.status <> 'active' OR NEW.status = 'active' OR "
    + " OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in _IDENTITY)
    + " BEGIN SELECT RAISE(ABORT, 'a hold only moves from active to captured, released or"
    " expired, once'); END",
    """CREATE TRIGGER wallet_holds_held_on_close AFTER UPDATE ON wallet_holds
    BEGIN UPDATE wallets SET held = held - OLD.amount
          WHERE customer_id = OLD.customer_id AND currency = OLD.currency; END""",
    """CREATE TRIGGER wallet_holds_no_delete BEFORE DELETE ON wallet_holds
    BEGIN SELECT RAISE(ABORT, 'holds are never deleted'); END""",
)


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    # Constant defaults and a column CHECK: no table rewrite on PostgreSQL, a plain ADD
    # COLUMN on SQLite (no rebuild of the wallets every ledger entry references).
    op.execute(
        "ALTER TABLE wallets ADD COLUMN held BIGINT DEFAULT 0 NOT NULL"
        " CONSTRAINT ck_wallets_held_non_negative CHECK (held >= 0)"
    )
    op.add_column(
        "wallets",
        sa.Column("depleted", sa.Boolean(), server_default=sa.true(), nullable=False),
    )
    op.execute("UPDATE wallets SET depleted = false WHERE balance > 0")
    op.create_index(
        "ix_wallets_held_currency",
        "wallets",
        ["currency"],
        postgresql_where=sa.text("held > 0"),
        sqlite_where=sa.text("held > 0"),
    )
    op.create_table(
        "wallet_holds",
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("hold_id", sa.String(length=64), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("kind", sa.String(length=8), server_default="hold", nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("captured_amount", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("status", sa.String(length=10), server_default="active", nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("reference_object_id", sa.String(length=255), nullable=True),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("key_scope", sa.String(length=6), server_default="client", nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("entry_id", sa.String(length=64), nullable=True),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_by", sa.String(length=64), nullable=True),
        sa.CheckConstraint("amount > 0", name=op.f("ck_wallet_holds_amount_positive")),
        sa.CheckConstraint(
            "captured_amount >= 0", name=op.f("ck_wallet_holds_captured_non_negative")
        ),
        sa.CheckConstraint(
            "captured_amount <= amount", name=op.f("ck_wallet_holds_captured_within_amount")
        ),
        sa.CheckConstraint(
            "status = 'captured' OR captured_amount = 0",
            name=op.f("ck_wallet_holds_captured_only_when_captured"),
        ),
        sa.CheckConstraint(
            "status IN ('active', 'captured', 'released', 'expired')",
            name=op.f("ck_wallet_holds_status_valid"),
        ),
        sa.CheckConstraint("kind IN ('hold', 'dispute')", name=op.f("ck_wallet_holds_kind_valid")),
        sa.CheckConstraint(
            "(kind = 'dispute') = (expires_at IS NULL)",
            name=op.f("ck_wallet_holds_expiry_by_kind"),
        ),
        sa.CheckConstraint(
            "key_scope IN ('client', 'system')", name=op.f("ck_wallet_holds_key_scope_valid")
        ),
        sa.ForeignKeyConstraint(
            ["customer_id", "currency"],
            ["wallets.customer_id", "wallets.currency"],
            name="fk_wallet_holds_wallet",
        ),
        sa.PrimaryKeyConstraint("customer_id", "hold_id", name=op.f("pk_wallet_holds")),
        sa.UniqueConstraint(
            "customer_id",
            "key_scope",
            "idempotency_key",
            name=op.f("uq_wallet_holds_customer_id_key_scope_idempotency_key"),
        ),
    )
    op.create_index(
        "ix_wallet_holds_customer_created", "wallet_holds", ["customer_id", "created_at"]
    )
    op.create_index(
        "ix_wallet_holds_expiring",
        "wallet_holds",
        ["expires_at"],
        postgresql_where=sa.text("status = 'active' AND expires_at IS NOT NULL"),
        sqlite_where=sa.text("status = 'active' AND expires_at IS NOT NULL"),
    )
    op.create_table(
        "topup_disputes",
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("dispute_id", sa.String(length=255), nullable=False),
        sa.Column("payment_id", sa.String(length=255), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("disputed_amount", sa.BigInteger(), nullable=False),
        sa.Column("share", sa.BigInteger(), nullable=False),
        sa.Column("held", sa.BigInteger(), nullable=False),
        sa.Column("shortfall", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("hold_id", sa.String(length=64), nullable=True),
        sa.Column("ledger_entry_id", sa.String(length=64), nullable=True),
        sa.Column("closing_event", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("disputed_amount > 0", name=op.f("ck_topup_disputes_disputed_positive")),
        sa.CheckConstraint("share >= 0", name=op.f("ck_topup_disputes_share_non_negative")),
        sa.CheckConstraint(
            "held >= 0 AND held <= share", name=op.f("ck_topup_disputes_held_within_share")
        ),
        sa.CheckConstraint(
            "shortfall = share - held", name=op.f("ck_topup_disputes_shortfall_is_unheld_share")
        ),
        sa.CheckConstraint(
            "status IN ('open', 'lost', 'won')", name=op.f("ck_topup_disputes_status_valid")
        ),
        sa.ForeignKeyConstraint(
            ["customer_id", "currency"],
            ["wallets.customer_id", "wallets.currency"],
            name="fk_topup_disputes_wallet",
        ),
        sa.PrimaryKeyConstraint(
            "customer_id", "provider", "dispute_id", name=op.f("pk_topup_disputes")
        ),
    )
    if postgres:
        op.execute(_PG_GUARDS)
    else:
        for statement in _SQLITE_GUARDS:
            op.execute(statement)


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.drop_table("topup_disputes")
    op.drop_table("wallet_holds")  # its triggers go with it
    if postgres:
        op.execute("DROP TRIGGER IF EXISTS wallets_held_by_holds ON wallets")
        op.execute("DROP FUNCTION IF EXISTS wallets_held_by_holds()")
        op.execute("DROP FUNCTION IF EXISTS wallet_holds_moves()")
    op.drop_index("ix_wallets_held_currency", table_name="wallets")
    # SQLite 3.35+ drops a column in place (its own CHECK goes with it).
    op.drop_column("wallets", "depleted")
    op.drop_column("wallets", "held")
