"""reports: indexes for analytics, balances at a time and the business summary

Revision ID: 0016
Revises: 0018

- ``ix_ledger_entries_wallet_created`` (customer_id, currency, created_at): one wallet's
  entries in a period, for the analytics buckets and for the chain point a balance at a moment
  reads. On PostgreSQL it INCLUDEs seq, is_credit, amount, event_type and after_balance, so
  those queries read the index alone.
- ``ix_ledger_entries_created`` (created_at): every entry in a period, for the business
  summary; INCLUDEs currency, is_credit, event_type and amount on PostgreSQL.
- ``ix_usage_events_customer_timestamp`` (customer_id, timestamp): usage cost per meter.
- ``ix_ledger_entries_expirations`` (created_at) WHERE event_type = 'expiration': the
  expired figures, without reading every entry of the period.
- ``ix_ledger_entries_wallet_seq`` (customer_id, currency, seq) is rebuilt on PostgreSQL to
  INCLUDE created_at, is_credit, amount, event_type and after_balance: a statement's totals
  and the walk back a wallet's chain to a moment then read no table row. Same key, so every
  query that used it still does.

The migration runs in one transaction, where CREATE INDEX blocks inserts into the table
while it builds. On a big ledger, build them beforehand with ``CREATE INDEX CONCURRENTLY``
(docs/reports.md#indexes); the migration then finds them (IF NOT EXISTS) and does nothing.
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0018"
branch_labels = None
depends_on = None

INDEXES = (
    (
        "ix_ledger_entries_wallet_created",
        "ledger_entries",
        ["customer_id", "currency", "created_at"],
        ["seq", "is_credit", "amount", "event_type", "after_balance"],
    ),
    (
        "ix_ledger_entries_created",
        "ledger_entries",
        ["created_at"],
        ["currency", "is_credit", "event_type", "amount"],
    ),
    ("ix_usage_events_customer_timestamp", "usage_events", ["customer_id", "timestamp"], []),
)
# Partial: only expiration entries (the breakage report, the summary's expired figures).
EXPIRATIONS = ("ix_ledger_entries_expirations", "ledger_entries", ["created_at"])
EXPIRATION = "event_type = 'expiration'"


WALLET_SEQ = ("ix_ledger_entries_wallet_seq", "ledger_entries", ["customer_id", "currency", "seq"])
WALLET_SEQ_INCLUDE = ["created_at", "is_credit", "amount", "event_type", "after_balance"]


def _covering(index: str) -> bool:
    """Whether ``index`` already INCLUDEs columns (an operator rebuilt it beforehand)."""
    definition = op.get_bind().scalar(
        sa.text("SELECT indexdef FROM pg_indexes WHERE indexname = :name"), {"name": index}
    )
    return definition is not None and " INCLUDE " in definition


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    if postgresql and not _covering(WALLET_SEQ[0]):
        name, table, columns = WALLET_SEQ
        op.drop_index(name, table_name=table)
        op.create_index(name, table, columns, postgresql_include=WALLET_SEQ_INCLUDE)
    for name, table, columns, include in INDEXES:
        if postgresql:
            op.create_index(name, table, columns, postgresql_include=include, if_not_exists=True)
        else:
            op.create_index(name, table, columns)
    name, table, columns = EXPIRATIONS
    op.create_index(
        name,
        table,
        columns,
        postgresql_where=sa.text(EXPIRATION),
        sqlite_where=sa.text(EXPIRATION),
        **({"if_not_exists": True} if postgresql else {}),
    )


def downgrade() -> None:
    op.drop_index(EXPIRATIONS[0], table_name=EXPIRATIONS[1])
    for name, table, _, _ in reversed(INDEXES):
        op.drop_index(name, table_name=table)
    if op.get_bind().dialect.name == "postgresql":
        name, table, columns = WALLET_SEQ
        op.drop_index(name, table_name=table)
        op.create_index(name, table, columns)
