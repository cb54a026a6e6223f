"""Fixtures: each ledger test runs on SQLite and on PostgreSQL, each in a fresh schema, and
each test starts from a fresh process's state (no test reads what another left behind)."""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import make_url, text
from sqlalchemy.orm import Session

from tests.support.cli import CliResult, run_cli
from tests.support.processes import create_pg_database, drop_pg_database, redis_server
from tests.support.state import preserved_process_state, reset_process_state
from worker.config import Settings
from worker.infra import dbrole, migrate
from worker.infra.db import dispose_engines, get_engine, transaction
from worker.models import Base

BACKENDS = ["sqlite", "postgresql"]
# The ledger and inbox tests also run through PgBouncer in transaction pooling mode
# (tests/ledger/conftest.py, tests/payments/conftest.py): "pgbouncer" is PostgreSQL behind it.
POOLED_BACKENDS = [*BACKENDS, "pgbouncer"]


@pytest.fixture(autouse=True, scope="module")
def _fresh_module() -> Iterator[None]:
    """Each test file starts, and leaves, the process as a fresh interpreter has it."""
    reset_process_state()
    yield
    reset_process_state()


@pytest.fixture(autouse=True)
def _fresh_test() -> Iterator[None]:
    """Nothing a test installs or caches process-wide outlives it (module fixtures' state
    is restored for the next test of the file)."""
    with preserved_process_state():
        yield


# The run's PostgreSQL URL -> the superuser's URL of the same database, which empties it.
_ADMIN_URLS: dict[str, str] = {}


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """One migrated PostgreSQL database for the whole run (tables are emptied per test).

    With TEST_PG_APP_ROLE set (tests/infra/test_db_role.py), the database is migrated by the
    superuser and the tests connect as that role, granted what docs/database-role.md grants.
    """
    name, url = create_pg_database()
    migrate.upgrade(Settings(database_url=url))
    role = os.environ.get("TEST_PG_APP_ROLE")
    if role:
        with get_engine(Settings(database_url=url)).begin() as conn:
            for statement in dbrole.grants_for(conn, role):
                conn.execute(text(statement))
        dispose_engines()
        run_url = make_url(url).set(username=role).render_as_string(hide_password=False)
    else:
        run_url = url
    _ADMIN_URLS[run_url] = url
    yield run_url
    dispose_engines()
    drop_pg_database(name)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for each test (much faster than migrating each time)."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    settings = Settings(database_url=f"sqlite:///{path}")
    migrate.upgrade(settings)
    get_engine(settings).dispose()
    return path


def _empty_pg(url: str) -> None:
    """One TRUNCATE of every table. The ledger's tables refuse TRUNCATE (migration 0014);
    ``session_replication_role = replica`` (superuser only, for this transaction) skips their
    triggers, and is still far faster than deleting row by row, which their row triggers
    refuse too."""
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with get_engine(Settings(database_url=_ADMIN_URLS.get(url, url))).begin() as conn:
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The database backend under test."""
    return request.param


@pytest.fixture(scope="session")
def pgbouncer_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A private PgBouncer (transaction pooling) in front of the test PostgreSQL, for the run."""
    from tests.support import pgbouncer

    if not pgbouncer.available():
        if os.environ.get("CI"):
            pytest.fail("pgbouncer is not installed (.ci/run installs Debian's pgbouncer)")
        pytest.skip("pgbouncer is not installed")
    users = ["root", *filter(None, [os.environ.get("TEST_PG_APP_ROLE")])]
    with pgbouncer.pgbouncer(tmp_path_factory.mktemp("pgbouncer"), users) as port:
        yield port


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty, migrated database on ``backend``."""
    if backend in ("postgresql", "pgbouncer"):
        url = request.getfixturevalue("pg_database")
        _empty_pg(url)
        if backend == "pgbouncer":
            direct = url
            url = make_url(url).set(port=request.getfixturevalue("pgbouncer_port"))
            url = url.render_as_string(hide_password=False)
            _ADMIN_URLS[url] = _ADMIN_URLS.get(direct, direct)
        return url
    path = tmp_path / "billing.db"
    shutil.copy(request.getfixturevalue("sqlite_template"), path)
    return f"sqlite:///{path}"


@pytest.fixture
def admin_database_url(database_url: str) -> str:
    """The test database as the superuser (it is ``database_url`` unless TEST_PG_APP_ROLE)."""
    return _ADMIN_URLS.get(database_url, database_url)


@pytest.fixture
def settings(database_url: str, backend: str) -> Settings:
    """Settings pointing at the test database (USD and INR wallets)."""
    pooler = "pgbouncer" if backend == "pgbouncer" else ""
    return Settings(database_url=database_url, api_key="test-key", database_pooler=pooler)


@pytest.fixture
def session(settings: Settings) -> Iterator[Session]:
    """One transaction, committed at the end of the test's use of it."""
    with transaction(settings) as s:
        yield s


@pytest.fixture
def tx(settings: Settings):
    """``tx()`` opens a new committed transaction on the test database."""
    return lambda: transaction(settings)


@pytest.fixture
def cli(
    database_url: str, backend: str, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., CliResult]:
    """``cli("wallet", "show", ...)`` runs the ``billing-worker`` entry point in-process on the
    test database; a ``CliResult(code, out, err)``."""
    if backend == "pgbouncer":
        monkeypatch.setenv("DATABASE_POOLER", "pgbouncer")  # as an operator would configure it
    return functools.partial(run_cli, database_url)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private redis-server for the run, started on first use on a spare port."""
    with redis_server(tmp_path_factory.mktemp("redis")) as (url, _):
        yield url
