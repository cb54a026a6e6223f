"""Engine and session factory.

One engine per database URL per process. Callers own transactions:
``with session_factory().begin() as session: ...``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from worker.config import Settings, get_settings

_lock = threading.Lock()
SQLITE_SYNCHRONOUS = "FULL"


def _configure_sqlite(engine: Engine) -> None:
    # pysqlite's own transaction handling defers BEGIN and breaks SAVEPOINT; take control of it.
    # BEGIN IMMEDIATE takes the write lock up front, so two writers queue on busy_timeout
    # instead of deadlocking when both try to upgrade a read lock.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # WAL with synchronous=NORMAL syncs only at checkpoints: a power cut can lose the last
        # commits, a webhook already answered 200 among them. FULL syncs the WAL at every
        # commit, so what was answered survives (one fsync per commit; readers never wait).
        cursor.execute(f"PRAGMA synchronous={SQLITE_SYNCHRONOUS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):  # type: ignore[no-untyped-def]
        connection.exec_driver_sql("BEGIN IMMEDIATE")


# A pooled connection unused for this long is pinged before it is handed out.
IDLE_PING_SECONDS = 5.0


def _ping_when_idle(engine: Engine) -> None:
    """Like ``pool_pre_ping``, but only for connections that sat idle in the pool.

    A ping is a round trip on every checkout, a quarter of a ledger post's round trips. A
    connection checked in moments ago is almost surely alive, and if the server did drop it,
    that one transaction fails and rolls back whole (SQLAlchemy then invalidates the rest of
    the pool), so nothing is lost. Idle connections, the ones a restart or a firewall leaves
    dead, are still checked first.
    """

    @event.listens_for(engine, "connect")
    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection, record):  # type: ignore[no-untyped-def]
        record.info["checked_in"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection, record, _proxy):  # type: ignore[no-untyped-def]
        checked_in = record.info.get("checked_in")
        if checked_in is not None and time.monotonic() - checked_in < IDLE_PING_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            # The pool discards this connection and retries the checkout with a new one.
            raise DisconnectionError(f"stale pooled connection: {exc}") from exc


def get_engine(settings: Settings | None = None) -> Engine:
    """The process's engine for ``settings.database_url`` (created on first use)."""
    settings = settings or get_settings()
    return _engine(settings.database_url, autocommit=False, pooler=settings.database_pooler)


def autocommit_engine(settings: Settings) -> Engine:
    """The process's engine for single statements in autocommit mode (PostgreSQL): its own
    small pool of connections that stay in autocommit, so a statement costs no switching in
    and out of it and no reset on check-in (there is never a transaction to roll back)."""
    return _engine(settings.database_url, autocommit=True, pooler=settings.database_pooler)


_engines: dict[tuple[str, bool, str], Engine] = {}


def connect_args(pooler: str) -> dict[str, Any]:
    """psycopg's connection arguments for PostgreSQL behind ``pooler`` (DATABASE_POOLER).

    psycopg 3 prepares a statement on the server once a connection has run it
    ``prepare_threshold`` times (5), as ``_pg3_0``, ``_pg3_1``, ... on that server connection.
    Behind PgBouncer in transaction pooling mode, consecutive transactions of one client run
    on different server connections, and a server connection serves many clients: a
    statement prepared by one client is missing for it on the next server connection
    (``prepared statement "_pg3_0" does not exist``), or another client's ``_pg3_0`` is found
    there (``bind message supplies 14 parameters, but prepared statement "_pg3_0" requires
    7``). ``prepare_threshold=None`` never prepares: every statement goes as an unnamed one,
    parsed by the server each time, which is what PgBouncer 1.18 can pass through.
    """
    args: dict[str, Any] = {"connect_timeout": 5}
    if pooler == "pgbouncer":
        args["prepare_threshold"] = None
    return args


def _engine(url: str, *, autocommit: bool, pooler: str = "") -> Engine:
    with _lock:
        engine = _engines.get((url, autocommit, pooler))
        if engine is None:
            if url.startswith("sqlite"):
                engine = create_engine(url, connect_args={"timeout": 30})
                _configure_sqlite(engine)
            else:
                engine = create_engine(
                    url,
                    # Autocommit work is one statement per checkout: a smaller pool suffices.
                    pool_size=5 if autocommit else 10,
                    max_overflow=10 if autocommit else 20,
                    # A request waits at most this long for a pooled connection: with the
                    # database down the answer is a prompt 503, not a hung worker.
                    pool_timeout=5,
                    connect_args=connect_args(pooler),
                    **(
                        {"isolation_level": "AUTOCOMMIT", "pool_reset_on_return": None}
                        if autocommit
                        else {}
                    ),
                )
                _ping_when_idle(engine)
            _engines[(url, autocommit, pooler)] = engine
        return engine


_factories: dict[tuple[int, int], sessionmaker[Session]] = {}


def session_factory(settings: Settings | None = None) -> sessionmaker[Session]:
    """A sessionmaker whose sessions carry their settings in ``session.info``."""
    settings = settings or get_settings()
    engine = get_engine(settings)
    key = (id(settings), id(engine))
    factory = _factories.get(key)
    if factory is None:
        factory = sessionmaker(bind=engine, expire_on_commit=False, info={"settings": settings})
        _factories[key] = factory
    return factory


@contextmanager
def transaction(settings: Settings | None = None) -> Iterator[Session]:
    """One committed unit of work: commits on success, rolls back on any exception."""
    with session_factory(settings).begin() as session:
        yield session


def autocommit_first(settings: Settings, sql: str, params: Mapping[str, Any]) -> Any:
    """The first row (or None) of ONE statement in autocommit mode (``autocommit_rows``)."""
    return autocommit_rows(settings, [(sql, params)])[0]


def autocommit_rows(settings: Settings, statements: list[tuple[str, Mapping[str, Any]]]) -> Any:
    """The first row (or None) of each statement, run straight on a pooled psycopg connection
    of ``autocommit_engine``, as ONE transaction in ONE round trip. PostgreSQL only.

    A lone statement is its own transaction, atomically and durably committed before this
    returns. Several are sent together in psycopg's pipeline mode between BEGIN and COMMIT:
    the server still runs them one after the other, each with its own snapshot (what a
    statement that must read after an earlier one's row lock needs), but the client waits for
    the network once. Either way without SQLAlchemy's statement machinery (most of a hot
    path's client CPU). Errors are raised as SQLAlchemy's own types (``OperationalError``,
    ``IntegrityError``, ...), as a Session would raise them, after the transaction is rolled
    back, and a connection the error broke is not handed out again.
    """
    sql = statements[-1][0]
    params = statements[-1][1]
    engine = autocommit_engine(settings)
    driver_error = engine.dialect.loaded_dbapi.Error

    def wrapped(exc: Exception, broken: bool) -> DBAPIError:
        return DBAPIError.instance(
            sql, params, exc, driver_error, connection_invalidated=broken, dialect=engine.dialect
        )

    try:
        pooled = engine.raw_connection()
    except driver_error as exc:  # no connection at all: the database is down or unreachable
        raise wrapped(exc, True) from exc
    try:
        conn = pooled.driver_connection
        try:
            if len(statements) == 1:
                return [conn.execute(sql, params).fetchone()]
            try:
                with conn.pipeline():
                    conn.execute("BEGIN")
                    cursors = [conn.execute(q, p) for q, p in statements]
                    conn.execute("COMMIT")
                return [c.fetchone() if c.description else None for c in cursors]
            except driver_error:
                if not (conn.broken or conn.closed):
                    conn.execute("ROLLBACK")  # the failed statement left the transaction open
                raise
        except driver_error as exc:
            broken = conn.broken or conn.closed
            if broken:
                # As a Session does on a disconnect: this connection is discarded and the rest
                # of the pool too (a server restart dropped them all), not one per request.
                pooled.invalidate()
                engine.dispose()
            raise wrapped(exc, broken) from exc
    finally:
        pooled.close()


def settings_of(session: Session) -> Settings:
    return session.info.get("settings") or get_settings()


def dispose_engines() -> None:
    """Forget pooled connections (after fork, and between tests)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose(close=False)
        _engines.clear()
        _factories.clear()


# A forked child (gunicorn worker, Celery prefork) must never reuse its parent's sockets.
os.register_at_fork(after_in_child=dispose_engines)
