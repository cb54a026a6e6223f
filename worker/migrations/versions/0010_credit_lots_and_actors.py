"""credit lots (what each credit brought, what is left, when it expires) and entry actors

Revision ID: 0010
Revises: 0009

Every credit now creates a lot and every debit records what it took from which lots
(``lot_consumptions``). A wallet's existing balance becomes one opening lot without expiry
(``entry_id`` NULL), so Σ remaining = balance holds from the start; ``ledger_markers`` records
the first entry posted with lots, from which ``verify`` checks every debit's consumption.
Ledger entries get ``actor`` ("unknown" for the entries before it). Lots only ever give up
what remains and consumptions are append-only: triggers refuse anything else.

Downgrading drops the lots (balances are untouched: they live on the wallets).
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_PG_GUARDS = """
CREATE FUNCTION credit_lots_only_spent() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'credit lots are never deleted';
    END IF;
    IF NEW.remaining > OLD.remaining OR NEW.expired < OLD.expired
       OR (NEW.seq, NEW.id, NEW.customer_id, NEW.currency, NEW.entry_id, NEW.amount,
           NEW.category, NEW.expires_at, NEW.created_at)
          IS DISTINCT FROM (OLD.seq, OLD.id, OLD.customer_id, OLD.currency, OLD.entry_id,
                            OLD.amount, OLD.category, OLD.expires_at, OLD.created_at) THEN
        RAISE EXCEPTION 'a credit lot only gives up what remains';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER credit_lots_only_spent BEFORE UPDATE OR DELETE ON credit_lots
    FOR EACH ROW EXECUTE FUNCTION credit_lots_only_spent();
CREATE FUNCTION lot_consumptions_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'lot consumptions are immutable';
END $$;
CREATE TRIGGER lot_consumptions_immutable BEFORE UPDATE OR DELETE ON lot_consumptions
    FOR EACH ROW EXECUTE FUNCTION lot_consumptions_immutable();
"""

_SQLITE_GUARDS = (
    """CREATE TRIGGER credit_lots_only_spent BEFORE UPDATE ON credit_lots
    WHEN NEW.remaining > OLD.remaining OR NEW.expired < OLD.expired
      OR NEW.seq IS NOT OLD.seq OR NEW.id IS NOT OLD.id
      OR NEW.customer_id IS NOT OLD.customer_id OR NEW.currency IS NOT OLD.currency
      OR NEW.entry_id IS NOT OLD.entry_id OR NEW.amount IS NOT OLD.amount
      OR NEW.category IS NOT OLD.category OR NEW.expires_at IS NOT OLD.expires_at
      OR NEW.created_at IS NOT OLD.created_at
    BEGIN SELECT RAISE(ABORT, 'a credit lot only gives up what remains'); END""",
    """CREATE TRIGGER credit_lots_no_delete BEFORE DELETE ON credit_lots
    BEGIN SELECT RAISE(ABORT, 'credit lots are never deleted'); END""",
    """CREATE TRIGGER lot_consumptions_no_update BEFORE UPDATE ON lot_consumptions
    BEGIN SELECT RAISE(ABORT, 'lot consumptions are immutable'); END""",
    """CREATE TRIGGER lot_consumptions_no_delete BEFORE DELETE ON lot_consumptions
    BEGIN SELECT RAISE(ABORT, 'lot consumptions are immutable'); END""",
)


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    # A constant default: no table rewrite on PostgreSQL, a plain ADD COLUMN on SQLite (no
    # rebuild, so the append-only triggers stay), and no UPDATE of an existing entry.
    op.add_column(
        "ledger_entries",
        sa.Column("actor", sa.String(length=64), server_default="unknown", nullable=False),
    )
    op.create_table(
        "credit_lots",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("entry_id", sa.String(length=64), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("remaining", sa.BigInteger(), nullable=False),
        sa.Column("expired", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("category", sa.String(length=12), server_default="paid", nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount > 0", name=op.f("ck_credit_lots_amount_positive")),
        sa.CheckConstraint("remaining >= 0", name=op.f("ck_credit_lots_remaining_non_negative")),
        sa.CheckConstraint("expired >= 0", name=op.f("ck_credit_lots_expired_non_negative")),
        sa.CheckConstraint(
            "remaining + expired <= amount", name=op.f("ck_credit_lots_within_amount")
        ),
        sa.CheckConstraint(
            "category IN ('paid', 'promotional')", name=op.f("ck_credit_lots_category_valid")
        ),
        sa.ForeignKeyConstraint(
            ["customer_id", "currency"],
            ["wallets.customer_id", "wallets.currency"],
            name="fk_credit_lots_wallet",
        ),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["ledger_entries.id"], name=op.f("fk_credit_lots_entry_id_ledger_entries")
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_credit_lots")),
        sa.UniqueConstraint("entry_id", name=op.f("uq_credit_lots_entry_id")),
        sa.UniqueConstraint("id", name=op.f("uq_credit_lots_id")),
    )
    op.create_index(
        "ix_credit_lots_spending",
        "credit_lots",
        [
            "customer_id",
            "currency",
            sa.text("(expires_at IS NULL)"),
            "expires_at",
            sa.text("category DESC"),
            "seq",
        ],
        postgresql_where=sa.text("remaining > 0"),
        sqlite_where=sa.text("remaining > 0"),
    )
    op.create_index(
        "ix_credit_lots_expiring",
        "credit_lots",
        ["expires_at"],
        postgresql_where=sa.text("remaining > 0 AND expires_at IS NOT NULL"),
        sqlite_where=sa.text("remaining > 0 AND expires_at IS NOT NULL"),
    )
    op.create_table(
        "lot_consumptions",
        sa.Column("entry_id", sa.String(length=64), nullable=False),
        sa.Column("lot_id", sa.String(length=64), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("amount > 0", name=op.f("ck_lot_consumptions_amount_positive")),
        sa.ForeignKeyConstraint(
            ["entry_id"],
            ["ledger_entries.id"],
            name=op.f("fk_lot_consumptions_entry_id_ledger_entries"),
        ),
        sa.ForeignKeyConstraint(
            ["lot_id"], ["credit_lots.id"], name=op.f("fk_lot_consumptions_lot_id_credit_lots")
        ),
        sa.PrimaryKeyConstraint("entry_id", "lot_id", name=op.f("pk_lot_consumptions")),
    )
    op.create_index(
        op.f("ix_lot_consumptions_lot_id"), "lot_consumptions", ["lot_id"], unique=False
    )
    op.create_table(
        "lot_notices",
        sa.Column("lot_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('expiring')", name=op.f("ck_lot_notices_kind_valid")),
        sa.ForeignKeyConstraint(
            ["lot_id"], ["credit_lots.id"], name=op.f("fk_lot_notices_lot_id_credit_lots")
        ),
        sa.PrimaryKeyConstraint("lot_id", "kind", name=op.f("pk_lot_notices")),
    )
    op.create_table(
        "ledger_markers",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_ledger_markers")),
    )
    # The opening lots: each wallet's balance, spendable as before, never expiring.
    lot_id = (
        "'lot_' || substr(md5(random()::text || w.customer_id || w.currency), 1, 21)"
        if postgres
        else "'lot_' || lower(hex(randomblob(11)))"
    )
    now = "now()" if postgres else "strftime('%Y-%m-%d %H:%M:%f', 'now')"
    # Only the two constants above are formatted in.
    opening = (
        "INSERT INTO credit_lots (id, customer_id, currency, entry_id, amount, remaining,"  # noqa: S608
        " expired, category, expires_at, created_at) "
        f"SELECT {lot_id}, w.customer_id, w.currency, NULL, w.balance, w.balance, 0, 'paid',"
        f" NULL, {now} FROM wallets w WHERE w.balance > 0 ORDER BY w.customer_id, w.currency"
    )
    op.execute(opening)
    op.execute(
        "INSERT INTO ledger_markers (name, value) "
        "SELECT 'lots_from_seq', COALESCE(MAX(seq), 0) + 1 FROM ledger_entries"
    )
    if postgres:
        op.execute(_PG_GUARDS)
    else:
        for statement in _SQLITE_GUARDS:
            op.execute(statement)


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.drop_table("ledger_markers")
    op.drop_table("lot_notices")
    op.drop_index(op.f("ix_lot_consumptions_lot_id"), table_name="lot_consumptions")
    op.drop_table("lot_consumptions")
    op.drop_index("ix_credit_lots_expiring", table_name="credit_lots")
    op.drop_index("ix_credit_lots_spending", table_name="credit_lots")
    op.drop_table("credit_lots")
    if postgres:
        op.execute("DROP FUNCTION IF EXISTS credit_lots_only_spent()")
        op.execute("DROP FUNCTION IF EXISTS lot_consumptions_immutable()")
        op.drop_column("ledger_entries", "actor")
    else:
        # SQLite 3.35+ drops a column in place (no rebuild, so the triggers stay).
        op.execute("ALTER TABLE ledger_entries DROP COLUMN actor")
