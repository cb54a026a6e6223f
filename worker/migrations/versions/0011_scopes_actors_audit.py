"""API-key scopes and credit limits, who changed what, and the audit log

Revision ID: 0011
Revises: 0012

- ``api_key_scopes``: one row per scope a key holds (read, customers, debit, credit, admin;
  a CHECK refuses anything else). Existing keys keep what they could do: an admin key gets
  ``admin``, any other key ``read``, ``customers``, ``debit`` and ``credit``. ``is_admin`` goes
  (the ``admin`` scope is the one source of truth).
- ``api_keys.max_credit`` (the largest single credit, NULL: none), ``created_by``,
  ``revoked_by``; ``customers.created_by``, ``updated_by``, ``updated_at``;
  ``wallet_charges.actor`` and ``topup_refunds.actor``. Rows from before are ``unknown``.
- ``audit_log``: append-only (triggers refuse UPDATE and DELETE).

Downgrading restores ``is_admin`` from the ``admin`` scope (any other scopes are lost) and
drops the rest.
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0012"
branch_labels = None
depends_on = None

_SCOPES = ("read", "customers", "debit", "credit", "admin")
_UNKNOWN = "unknown"

_PG_AUDIT_GUARD = """
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only';
END $$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
"""

_SQLITE_AUDIT_GUARDS = (
    """CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
    """CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
)


def _actor(name: str, nullable: bool = False) -> sa.Column:
    if nullable:
        return sa.Column(name, sa.String(length=64), nullable=True)
    # A constant default: no table rewrite on PostgreSQL and no UPDATE of existing rows.
    return sa.Column(name, sa.String(length=64), server_default=_UNKNOWN, nullable=False)


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    # Rebuilt on SQLite (no triggers on this table, so nothing is lost by the copy), before
    # any table refers to it: SQLite cannot drop a table that a foreign key points at.
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("max_credit", sa.BigInteger(), nullable=True))
        batch.add_column(_actor("created_by"))
        batch.add_column(_actor("revoked_by", nullable=True))
        batch.create_check_constraint(op.f("ck_api_keys_max_credit_positive"), "max_credit > 0")
    op.execute(f"UPDATE api_keys SET revoked_by = '{_UNKNOWN}' WHERE revoked_at IS NOT NULL")  # noqa: S608
    op.create_table(
        "api_key_scopes",
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.CheckConstraint(
            "scope IN (" + ", ".join(f"'{s}'" for s in _SCOPES) + ")",
            name=op.f("ck_api_key_scopes_scope_valid"),
        ),
        sa.ForeignKeyConstraint(
            ["key_id"], ["api_keys.id"], name=op.f("fk_api_key_scopes_key_id_api_keys")
        ),
        sa.PrimaryKeyConstraint("key_id", "scope", name=op.f("pk_api_key_scopes")),
    )
    # Existing keys keep what they could do: admin, or everything short of it.
    op.execute(
        "INSERT INTO api_key_scopes (key_id, scope) SELECT id, 'admin' FROM api_keys WHERE is_admin"
    )
    for scope in ("read", "customers", "debit", "credit"):
        op.execute(
            "INSERT INTO api_key_scopes (key_id, scope) "  # noqa: S608 (constants only)
            f"SELECT id, '{scope}' FROM api_keys WHERE NOT is_admin"
        )
    # The admin scope is now the one source of truth. In place on SQLite 3.35+ (no rebuild).
    if postgres:
        op.drop_column("api_keys", "is_admin")
    else:
        op.execute("ALTER TABLE api_keys DROP COLUMN is_admin")

    # Plain ADD COLUMNs (no rebuild on SQLite: wallets and charges keep their triggers).
    op.add_column("customers", _actor("created_by"))
    op.add_column("customers", _actor("updated_by", nullable=True))
    op.add_column("customers", sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("wallet_charges", _actor("actor"))
    op.add_column("topup_refunds", _actor("actor"))

    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=255), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    if postgres:
        op.execute(_PG_AUDIT_GUARD)
    else:
        for statement in _SQLITE_AUDIT_GUARDS:
            op.execute(statement)


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.drop_table("audit_log")  # its triggers go with it
    if postgres:
        op.execute("DROP FUNCTION IF EXISTS audit_log_append_only()")
    for table, column in (
        ("topup_refunds", "actor"),
        ("wallet_charges", "actor"),
        ("customers", "updated_at"),
        ("customers", "updated_by"),
        ("customers", "created_by"),
    ):
        if postgres:
            op.drop_column(table, column)
        else:
            # SQLite 3.35+ drops a column in place (no rebuild, so the triggers stay).
            op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    op.add_column(
        "api_keys", sa.Column("is_admin", sa.Boolean(), server_default=sa.false(), nullable=False)
    )
    op.execute(
        "UPDATE api_keys SET is_admin = "
        "EXISTS (SELECT 1 FROM api_key_scopes s WHERE s.key_id = api_keys.id AND s.scope = 'admin')"
    )
    op.drop_table("api_key_scopes")
    # Rebuilt on SQLite, now that no table refers to it.
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_constraint(op.f("ck_api_keys_max_credit_positive"), type_="check")
        batch.drop_column("revoked_by")
        batch.drop_column("created_by")
        batch.drop_column("max_credit")
