"""The least-privilege role of docs/database-role.md: the service runs under it, and it can
neither rewrite nor empty the ledger nor switch its guards off."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import make_url, text
from sqlalchemy.exc import DBAPIError

from tests.support.processes import PG_ADMIN_DSN, ROOT, create_pg_database, drop_pg_database
from worker import ledger
from worker.config import Settings
from worker.infra import dbrole, migrate
from worker.infra.db import dispose_engines, get_engine, transaction
from worker.models import Base


@pytest.fixture
def role() -> Iterator[str]:
    """A login role that owns nothing, dropped afterwards (roles are cluster-wide)."""
    name = f"bw_app_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{name}" LOGIN')
    yield name
    dispose_engines()
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'DROP ROLE IF EXISTS "{name}"')


@pytest.fixture
def restricted(role: str) -> Iterator[tuple[str, str]]:
    """(the role's URL, the superuser's URL) of a database migrated and granted as documented."""
    name, url = create_pg_database("bw_role")
    migrate.upgrade(Settings(database_url=url))
    with get_engine(Settings(database_url=url)).begin() as conn:
        for statement in dbrole.grants_for(conn, role):
            conn.execute(text(statement))
    yield make_url(url).set(username=role).render_as_string(hide_password=False), url
    dispose_engines()
    drop_pg_database(name)


REFUSED = [
    "UPDATE ledger_entries SET reason = 'rewritten'",
    "DELETE FROM ledger_entries",
    "TRUNCATE ledger_entries",
    "TRUNCATE wallets CASCADE",
    "ALTER TABLE ledger_entries DISABLE TRIGGER ledger_entries_no_update",
    "DROP TRIGGER ledger_entries_no_update ON ledger_entries",
    "DROP TRIGGER ledger_entries_no_truncate ON ledger_entries",
    "SET session_replication_role = replica",
    "CREATE TRIGGER sneaky AFTER INSERT ON ledger_entries FOR EACH ROW "
    "EXECUTE FUNCTION ledger_entries_immutable()",
]


def test_the_role_runs_the_ledger_but_cannot_rewrite_empty_or_unguard_it(
    restricted: tuple[str, str],
) -> None:
    url, _ = restricted
    settings = Settings(database_url=url)
    with transaction(settings) as s:
        customer, _ = ledger.create_customer(s, email="r@example.com", name="R")
        ledger.post_entry(
            s, customer_id=customer.customer_id, currency="USD", amount=500, is_credit=True
        )
    for statement in REFUSED:
        with pytest.raises(DBAPIError) as caught, get_engine(settings).begin() as conn:
            conn.execute(text(statement))
        assert "permission denied" in str(caught.value) or "must be owner" in str(caught.value)
    with transaction(settings) as s:
        assert ledger.get_wallet(s, customer.customer_id, "USD").balance == 500
        assert [e.amount for e in ledger.list_entries(s, customer.customer_id)] == [500]


def test_the_suites_ledger_tests_pass_under_the_role(role: str) -> None:
    # The whole of tests/ledger on PostgreSQL, connected as the role (tests/conftest.py migrates
    # as the superuser and grants what the docs grant). The multi-process races are left out
    # to keep this quick: the thread races run the same statements.
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/ledger",
            "-k",
            "not sqlite and not processes",
        ],
        cwd=ROOT,
        env={**os.environ, "TEST_PG_APP_ROLE": role},
        capture_output=True,
        text=True,
        timeout=600,
    )
    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else run.stderr
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " passed" in summary and "failed" not in summary and "error" not in summary


def test_db_grants_prints_the_documented_statements(cli, backend: str) -> None:
    result = cli("db", "grants", "billing_app")
    if backend == "sqlite":
        assert result.code == 2 and result.err.count("\n") == 1
        assert "DATABASE_URL" in result.err
        return
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert 'GRANT SELECT, INSERT ON "ledger_entries" TO "billing_app";' in lines
    assert 'GRANT SELECT ON "alembic_version" TO "billing_app";' in lines
    assert not any("TRUNCATE" in line or "TRIGGER" in line for line in lines)


def test_the_documented_grants_are_what_db_grants_prints() -> None:
    doc = (ROOT / "docs" / "database-role.md").read_text()
    tables = [t.name for t in Base.metadata.sorted_tables] + ["alembic_version"]
    expected = ";\n".join(dbrole.grant_statements("billing_app", "billing", tables)) + ";"
    assert f"```sql\n{expected}\n```" in doc
