"""usage events: partial indexes for the two statuses that are looked up

Revision ID: 0019
Revises: 0015

``ix_usage_events_status_seq`` (status, seq) held an entry for every event ever stored, and
billing moves each event out of ``pending`` once, so every billed event also wrote a new
entry into it. Only two statuses are ever looked up by status: ``pending`` (the billing claim,
oldest first) and ``unbilled`` (settlement per wallet, the business summary). Two partial
indexes replace it:

- ``ix_usage_events_pending`` (seq) WHERE status = 'pending'
- ``ix_usage_events_unbilled`` (customer_id, currency, seq) WHERE status = 'unbilled'

A row that leaves ``pending`` for ``processed`` satisfies neither predicate, so billing it
writes no entry into either, and both stay as small as the work still to do.
"""

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0015"
branch_labels = None
depends_on = None

PENDING = "status = 'pending'"
UNBILLED = "status = 'unbilled'"


def upgrade() -> None:
    op.create_index(
        "ix_usage_events_pending",
        "usage_events",
        ["seq"],
        postgresql_where=sa.text(PENDING),
        sqlite_where=sa.text(PENDING),
    )
    op.create_index(
        "ix_usage_events_unbilled",
        "usage_events",
        ["customer_id", "currency", "seq"],
        postgresql_where=sa.text(UNBILLED),
        sqlite_where=sa.text(UNBILLED),
    )
    op.drop_index("ix_usage_events_status_seq", table_name="usage_events")


def downgrade() -> None:
    op.create_index("ix_usage_events_status_seq", "usage_events", ["status", "seq"])
    op.drop_index("ix_usage_events_unbilled", table_name="usage_events")
    op.drop_index("ix_usage_events_pending", table_name="usage_events")
