"""The embedded SQLite default commits durably: WAL with synchronous=FULL, so a webhook
answered 200 (its inbox row committed) survives a power cut, not only a process crash."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from worker.config import Settings
from worker.infra.db import get_engine, transaction

FULL = 2  # PRAGMA synchronous: 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA


def test_every_sqlite_connection_is_wal_with_synchronous_full(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'billing.db'}")
    engine = get_engine(settings)
    # Two pooled connections, as the driver has them (no BEGIN IMMEDIATE: both at once).
    first, second = engine.raw_connection(), engine.raw_connection()
    for conn in (first, second):
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == FULL
        conn.close()
    with transaction(settings) as s:  # and inside the BEGIN IMMEDIATE of a unit of work
        assert s.execute(text("PRAGMA synchronous")).scalar() == FULL
    engine.dispose()
