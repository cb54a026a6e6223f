"""PostgreSQL behind PgBouncer in transaction pooling mode (DATABASE_POOLER=pgbouncer).

The failure the setting fixes, reproduced step by step: psycopg 3 prepares a statement on the
server after five runs, and the next transaction of the same client lands on another server
connection, where that statement does not exist. The ledger and inbox suites run through the
same PgBouncer (``backend == "pgbouncer"``, tests/ledger/conftest.py, tests/payments/conftest.py).
"""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError

from worker.config import ConfigError, Settings
from worker.infra.db import get_engine


@pytest.fixture
def backend() -> str:
    return "pgbouncer"


def _server_connection_switch(settings: Settings) -> list[int]:
    """One client runs a statement six times, then again while the server connection it used
    is taken by another client's open transaction, so PgBouncer hands it another one. Returns
    the server PIDs it ran on."""
    from tests.support.pgbouncer import POOL_SIZE

    engine = get_engine(settings)
    query = text("SELECT pg_backend_pid() + :zero")
    pid = text("SELECT pg_backend_pid()")
    pids: list[int] = []
    holders = []
    try:
        with engine.connect() as client:
            for _ in range(6):  # past psycopg's prepare_threshold (5)
                pids.append(client.execute(query, {"zero": 0}).scalar())
                client.commit()
            # Open transactions take server connections until one has the client's.
            for _ in range(POOL_SIZE):
                holder = engine.connect()
                holders.append((holder, holder.execute(pid).scalar()))
                if holders[-1][1] == pids[-1]:
                    break
            assert holders[-1][1] == pids[-1]
            for holder, server in holders[:-1]:
                holder.commit()  # idle again: the client's next transaction gets one of these
            pids.append(client.execute(query, {"zero": 0}).scalar())
            client.commit()
    finally:
        for holder, _ in holders:
            holder.close()
        engine.dispose()
    return pids


def test_prepared_statements_break_behind_pgbouncer_without_the_setting(settings) -> None:
    with pytest.raises(ProgrammingError, match=r'prepared statement "_pg3_\d+" does not exist'):
        _server_connection_switch(settings.with_overrides(database_pooler=""))


def test_with_database_pooler_pgbouncer_no_statement_is_prepared(settings) -> None:
    assert settings.database_pooler == "pgbouncer"
    pids = _server_connection_switch(settings)
    assert pids[-1] != pids[-2]  # it did run on another server connection, and it worked


def test_database_pooler_is_checked_at_start_up() -> None:
    assert Settings.from_env({"DATABASE_POOLER": "PgBouncer"}).database_pooler == "pgbouncer"
    assert Settings.from_env({"DATABASE_POOLER": "none"}).database_pooler == ""
    assert Settings.from_env({}).database_pooler == ""
    with pytest.raises(ConfigError, match="DATABASE_POOLER"):
        Settings.from_env({"DATABASE_POOLER": "pgpool"})
