"""Migrations: one head; upgrade, downgrade and upgrade again; the result matches the models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from tests.support import create_pg_database, drop_pg_database
from worker.config import Settings
from worker.infra import migrate
from worker.infra.db import get_engine
from worker.models import Base


@pytest.fixture
def empty_settings(backend: str, tmp_path: Path) -> Iterator[Settings]:
    """Settings for a brand-new, empty database on ``backend``."""
    if backend == "sqlite":
        yield Settings(database_url=f"sqlite:///{tmp_path / 'fresh.db'}")
        return
    name, url = create_pg_database("bw_migr")
    try:
        yield Settings(database_url=url)
    finally:
        get_engine(Settings(database_url=url)).dispose()
        drop_pg_database(name)


def _tables(settings: Settings) -> set[str]:
    return set(inspect(get_engine(settings)).get_table_names()) - {"alembic_version"}


def _diff(settings: Settings) -> list:
    with get_engine(settings).connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "render_as_batch": conn.dialect.name == "sqlite"}
        )
        return compare_metadata(context, Base.metadata)


def test_one_head() -> None:
    assert len(migrate.heads()) == 1


def test_upgrade_downgrade_upgrade_from_empty(empty_settings: Settings) -> None:
    assert _tables(empty_settings) == set()
    migrate.upgrade(empty_settings)
    assert _tables(empty_settings) == set(Base.metadata.tables)
    migrate.downgrade(empty_settings)
    assert _tables(empty_settings) == set()
    migrate.upgrade(empty_settings)
    assert _tables(empty_settings) == set(Base.metadata.tables)


def test_migrated_schema_matches_models(empty_settings: Settings) -> None:
    migrate.upgrade(empty_settings)
    assert _diff(empty_settings) == []


def test_downgrade_removes_immutability_triggers(empty_settings: Settings) -> None:
    migrate.upgrade(empty_settings)
    migrate.downgrade(empty_settings)
    engine = get_engine(empty_settings)
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            rows = conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type='trigger'")
        else:
            rows = conn.exec_driver_sql(
                "SELECT proname FROM pg_proc WHERE proname = 'ledger_entries_immutable'"
            )
        assert rows.all() == []
