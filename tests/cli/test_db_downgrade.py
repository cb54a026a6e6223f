"""``billing-worker db downgrade``: always names its revision, never drops a ledger with entries
unless told to, and changes nothing when it refuses; on a fresh database of each backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from tests.support.cli import run_cli, run_cli_process
from tests.support.processes import create_pg_database, drop_pg_database
from worker import ledger
from worker.config import Settings
from worker.infra import migrate
from worker.infra.db import get_engine, transaction


@pytest.fixture
def fresh(backend: str, tmp_path: Path) -> Iterator[Settings]:
    """A brand-new database of its own on ``backend``, migrated to head."""
    if backend == "sqlite":
        settings = Settings(database_url=f"sqlite:///{tmp_path / 'fresh.db'}")
        migrate.upgrade(settings)
        yield settings
        get_engine(settings).dispose()
        return
    name, url = create_pg_database("bw_downgrade")
    settings = Settings(database_url=url)
    try:
        migrate.upgrade(settings)
        yield settings
    finally:
        get_engine(settings).dispose()
        drop_pg_database(name)


def with_an_entry(settings: Settings) -> None:
    with transaction(settings) as s:
        customer, _ = ledger.create_customer(s, email="ada@example.com", name="Ada")
        ledger.post_entry(
            s, customer_id=customer.customer_id, currency="USD", amount=500, is_credit=True
        )


def state(settings: Settings) -> tuple[str, int]:
    """(the revision the database is at, its ledger entries)."""
    with get_engine(settings).connect() as conn:
        version = conn.scalar(text("SELECT version_num FROM alembic_version"))
        return version, conn.scalar(text("SELECT count(*) FROM ledger_entries"))


def test_without_a_revision_it_is_a_usage_error_that_changes_nothing(fresh: Settings) -> None:
    with_an_entry(fresh)
    before = state(fresh)
    result = run_cli_process(fresh.database_url, "db", "downgrade")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("billing-worker: db downgrade needs the revision")
    assert state(fresh) == before


def test_past_the_ledger_with_entries_it_refuses_and_changes_nothing(fresh: Settings) -> None:
    with_an_entry(fresh)
    before = state(fresh)
    for target in ("base", "--revision=base"):
        code, out, err = run_cli(fresh.database_url, "db", "downgrade", target)
        assert (code, out) == (2, "")
        assert err == (
            "billing-worker: downgrading to base drops the ledger, which holds 1 entries;"
            " pass --drop-ledger to destroy them\n"
        )
    assert state(fresh) == before


def test_with_drop_ledger_it_goes_to_base(fresh: Settings) -> None:
    with_an_entry(fresh)
    code, out, err = run_cli(fresh.database_url, "db", "downgrade", "base", "--drop-ledger")
    assert (code, out.strip()) == (0, "database at base"), err
    assert set(inspect(get_engine(fresh)).get_table_names()) <= {"alembic_version"}


def test_a_downgrade_that_keeps_the_ledger_needs_no_flag(fresh: Settings) -> None:
    with_an_entry(fresh)
    code, out, err = run_cli(fresh.database_url, "db", "downgrade", "0009")
    assert (code, out.strip()) == (0, "database at 0009"), err
    assert state(fresh) == ("0009", 1)


def test_an_empty_ledger_may_go_to_base(fresh: Settings) -> None:
    code, out, err = run_cli(fresh.database_url, "db", "downgrade", "base")
    assert (code, out.strip()) == (0, "database at base"), err


def test_an_unknown_revision_is_one_line_and_changes_nothing(fresh: Settings) -> None:
    before = state(fresh)
    code, out, err = run_cli(fresh.database_url, "db", "downgrade", "nope")
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and "nope" in err
    assert state(fresh) == before


def test_the_core_refuses_too(fresh: Settings) -> None:
    with_an_entry(fresh)
    with pytest.raises(migrate.DowngradeRefused, match="drops the ledger"):
        migrate.downgrade(fresh, "base")
    assert state(fresh)[1] == 1
