"""app_secrets: the signing key the web processes share when SECRET_KEY is unset

Revision ID: 0018
Revises: 0014

The dashboard's session cookies and the customer portal's links are signed with SECRET_KEY.
Left unset (the embedded default), the first web process generates one and inserts it here;
every other process, and every restart, reads the same row, so the Procfile's several
gunicorn workers agree with nothing to configure. The service role may read and insert it,
never change it (worker.infra.dbrole).

The dashboard's overview reads the last 30 days of entries through 0016's
``ix_ledger_entries_created`` (entries by time).
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "app_secrets",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("length(value) >= 32", name=op.f("ck_app_secrets_value_long_enough")),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_app_secrets")),
    )


def downgrade() -> None:
    op.drop_table("app_secrets")
