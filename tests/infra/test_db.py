"""Connection handling: a pooled PostgreSQL connection the server dropped is replaced."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DataError, OperationalError

from tests.support.processes import PG_ADMIN_DSN
from worker.config import Settings
from worker.infra import db
from worker.infra.db import get_engine, transaction


@pytest.fixture
def backend() -> str:
    """PostgreSQL only: SQLite has no server to drop connections."""
    return "postgresql"


def test_idle_connection_dropped_by_the_server_is_replaced(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = get_engine(settings)
    engine.dispose()  # a pool holding exactly the one connection we are about to kill
    with transaction(settings) as s:
        first_pid = s.connection().exec_driver_sql("SELECT pg_backend_pid()").scalar()
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (first_pid,))
    # Treat every pooled connection as idle so the checkout pings it.
    monkeypatch.setattr(db, "IDLE_PING_SECONDS", 0.0)
    with transaction(settings) as s:
        pid = s.connection().exec_driver_sql("SELECT pg_backend_pid()").scalar()
    engine.dispose()
    assert pid != first_pid


def test_only_idle_connections_are_pinged(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = get_engine(settings)
    pings: list[object] = []
    real_ping = engine.dialect.do_ping

    def counting_ping(dbapi_connection):  # type: ignore[no-untyped-def]
        pings.append(dbapi_connection)
        return real_ping(dbapi_connection)

    monkeypatch.setattr(engine.dialect, "do_ping", counting_ping)
    for _ in range(3):
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    assert pings == []
    monkeypatch.setattr(db, "IDLE_PING_SECONDS", 0.0)
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    assert len(pings) == 1


def test_autocommit_first_commits_one_statement_and_raises_sqlalchemys_errors(
    settings: Settings,
) -> None:
    # Committed on return: another connection sees it at once.
    key = db.autocommit_first(
        settings,
        "INSERT INTO inbox_events (provider, provider_event_id, event_type, payload, status,"
        " attempts, received_at) VALUES ('dodo', 'evt_ac', 'x', '{}', 'pending', 0, now())"
        " RETURNING id",
        {},
    )
    assert key is not None
    with transaction(settings) as s:
        assert s.execute(text("SELECT count(*) FROM inbox_events")).scalar() == 1
    with pytest.raises(DataError):  # a client's bad value: the views answer 4xx for it
        db.autocommit_first(settings, "SELECT 1 / %(zero)s", {"zero": 0})
    # The failed statement left its pooled connection usable.
    assert db.autocommit_first(settings, "SELECT 1", {}) == (1,)
    down = Settings(database_url="postgresql+psycopg://root@127.0.0.1:1/nowhere")
    with pytest.raises(OperationalError):  # what the views answer 503 for
        db.autocommit_first(down, "SELECT 1", {})
