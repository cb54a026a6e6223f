"""The least-privilege PostgreSQL role the service can run under (docs/database-role.md).

The tables belong to an owner role that only runs migrations (``billing-worker db upgrade``,
the Procfile's ``release``). The service connects as another role that owns nothing, so it
can never ALTER a table, nor drop or disable a trigger (only an owner or a superuser can), nor
set ``session_replication_role`` (superuser only). Its privileges: every table's SELECT,
INSERT, UPDATE and DELETE, except the ledger's history, which it may only read and append to
(``APPEND_ONLY``); no TRUNCATE anywhere, and no TRIGGER or REFERENCES. The row triggers
(migrations 0001, 0010) and the TRUNCATE trigger (0014) stay the second line, for the owner.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, text

# Tables the service may do less to than DEFAULT_PRIVILEGES: the ledger's history (read and
# append), and the migration marker (only migrations, run by the owner, write it).
APPEND_ONLY: dict[str, tuple[str, ...]] = {
    "ledger_entries": ("SELECT", "INSERT"),
    "audit_log": ("SELECT", "INSERT"),
    "lot_consumptions": ("SELECT", "INSERT"),
    # A lot only gives up what remains (0010's trigger refuses any other UPDATE).
    "credit_lots": ("SELECT", "INSERT", "UPDATE"),
    # A hold only moves from active, once (0015's trigger refuses any other UPDATE).
    "wallet_holds": ("SELECT", "INSERT", "UPDATE"),
    "alembic_version": ("SELECT",),
    # Generated once, then only read (worker.access.signing): never changed or removed.
    "app_secrets": ("SELECT", "INSERT"),
}
DEFAULT_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE")


def grant_statements(role: str, database: str, tables: Iterable[str]) -> list[str]:
    """The SQL an owner (or superuser) runs after each migration to let ``role`` run the
    service on ``database``'s ``tables``, and nothing more. Names are quoted identifiers."""
    quoted = _ident(role)
    statements = [
        f"GRANT CONNECT ON DATABASE {_ident(database)} TO {quoted}",
        f"GRANT USAGE ON SCHEMA public TO {quoted}",
        # Serial ids (ledger_entries.seq, inbox_events.id, ...): nextval and currval only.
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {quoted}",
    ]
    for table in sorted(tables):
        privileges = APPEND_ONLY.get(table, DEFAULT_PRIVILEGES)
        statements.append(f"GRANT {', '.join(privileges)} ON {_ident(table)} TO {quoted}")
    return statements


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def grants_for(connection: Connection, role: str) -> list[str]:
    """``grant_statements`` for the database ``connection`` is on, as migrated now."""
    database = connection.execute(text("SELECT current_database()")).scalar_one()
    tables = connection.execute(
        text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    ).scalars()
    return grant_statements(role, database, tables)
