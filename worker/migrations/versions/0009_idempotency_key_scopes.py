"""idempotency keys in two namespaces: a client's keys can never equal the system's own

Revision ID: 0009
Revises: 0006

Ledger entries and wallet charges get ``key_scope`` ("client" or "system"); their keys are
unique per customer and scope. Existing rows are classified by what wrote them: a ledger entry
posted through the API or CLI (``merchant_adjustment``) holds a client's key, every other
entry a key the system derived; a charge's key is the system's when it is the default
``charge:{order_id}``. A client retrying with its old key after the upgrade finds its entry.
Downgrading fails if a client key now equals a system key of the same customer.
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0006"
branch_labels = None
depends_on = None

_SCOPES = "key_scope IN ('client', 'system')"


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("key_scope", sa.String(length=6), server_default="system", nullable=False)
        )
    # Ledger entries are append-only (0001's triggers refuse UPDATE): lifted for this one
    # classification only, inside the migration's transaction.
    _without_immutability_guard(
        postgres,
        "UPDATE ledger_entries SET key_scope = 'client' "
        "WHERE event_type = 'merchant_adjustment' AND idempotency_key IS NOT NULL",
    )
    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.alter_column("key_scope", server_default="client")
        batch_op.create_check_constraint(op.f("ck_ledger_entries_key_scope_valid"), _SCOPES)
        batch_op.drop_constraint(
            op.f("uq_ledger_entries_customer_id_idempotency_key"), type_="unique"
        )
        batch_op.create_unique_constraint(
            op.f("uq_ledger_entries_customer_id_key_scope_idempotency_key"),
            ["customer_id", "key_scope", "idempotency_key"],
        )
    if not postgres:
        _sqlite_guards()  # a batch rebuild of the table drops its triggers

    with op.batch_alter_table("wallet_charges", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("key_scope", sa.String(length=6), server_default="client", nullable=False)
        )
    op.execute(
        "UPDATE wallet_charges SET key_scope = 'system' "
        "WHERE idempotency_key = 'charge:' || order_id"
    )
    with op.batch_alter_table("wallet_charges", schema=None) as batch_op:
        batch_op.create_check_constraint(op.f("ck_wallet_charges_key_scope_valid"), _SCOPES)
        batch_op.drop_constraint(
            op.f("uq_wallet_charges_customer_id_idempotency_key"), type_="unique"
        )
        batch_op.create_unique_constraint(
            op.f("uq_wallet_charges_customer_id_key_scope_idempotency_key"),
            ["customer_id", "key_scope", "idempotency_key"],
        )


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    with op.batch_alter_table("wallet_charges", schema=None) as batch_op:
        batch_op.drop_constraint(
            op.f("uq_wallet_charges_customer_id_key_scope_idempotency_key"), type_="unique"
        )
        batch_op.create_unique_constraint(
            op.f("uq_wallet_charges_customer_id_idempotency_key"),
            ["customer_id", "idempotency_key"],
        )
        batch_op.drop_constraint(op.f("ck_wallet_charges_key_scope_valid"), type_="check")
        batch_op.drop_column("key_scope")
    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.drop_constraint(
            op.f("uq_ledger_entries_customer_id_key_scope_idempotency_key"), type_="unique"
        )
        batch_op.create_unique_constraint(
            op.f("uq_ledger_entries_customer_id_idempotency_key"),
            ["customer_id", "idempotency_key"],
        )
        batch_op.drop_constraint(op.f("ck_ledger_entries_key_scope_valid"), type_="check")
        batch_op.drop_column("key_scope")
    if not postgres:
        _sqlite_guards()


def _without_immutability_guard(postgres: bool, statement: str) -> None:
    if postgres:
        op.execute("ALTER TABLE ledger_entries DISABLE TRIGGER ledger_entries_no_update")
        op.execute(statement)
        op.execute("ALTER TABLE ledger_entries ENABLE TRIGGER ledger_entries_no_update")
    else:
        op.execute("DROP TRIGGER IF EXISTS ledger_entries_no_update")
        op.execute(statement)
        _sqlite_guards()


def _sqlite_guards() -> None:
    # The same guards as 0001 creates for SQLite.
    for action in ("UPDATE", "DELETE"):
        op.execute(f"DROP TRIGGER IF EXISTS ledger_entries_no_{action.lower()}")
        op.execute(
            f"CREATE TRIGGER ledger_entries_no_{action.lower()} BEFORE {action} "
            "ON ledger_entries BEGIN SELECT RAISE(ABORT, 'ledger entries are immutable'); END"
        )
