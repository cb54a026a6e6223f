"""the ledger refuses TRUNCATE (PostgreSQL)

Revision ID: 0014
Revises: 0011

0001's row triggers refuse UPDATE and DELETE of ledger entries, but TRUNCATE fires no row
trigger: one statement (``TRUNCATE ledger_entries`` or ``TRUNCATE wallets CASCADE``) would empty
the ledger. A statement trigger ``BEFORE TRUNCATE`` refuses it, on the ledger entries and, where
they exist, on the credit lots and their consumptions (0010), which are append-only history
too. SQLite has no TRUNCATE (a DELETE without WHERE meets the row triggers), so there is
nothing to do there.

Only a superuser (or the tables' owner) can get past it, by dropping or disabling the trigger
or with ``session_replication_role = replica`` (the test suite's reset does that); the service
itself never needs to: see docs/database-role.md for running it under a role that can do none
of it.
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0011"
branch_labels = None
depends_on = None

GUARDED = ("ledger_entries", "credit_lots", "lot_consumptions")

_FUNCTION = """
CREATE FUNCTION ledger_refuse_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: TRUNCATE is refused', TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END $$;
"""


def _tables() -> list[str]:
    present = set(sa.inspect(op.get_bind()).get_table_names())
    return [table for table in GUARDED if table in present]


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(_FUNCTION)
    for table in _tables():
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_truncate()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in _tables():
        op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
    op.execute("DROP FUNCTION IF EXISTS ledger_refuse_truncate()")
