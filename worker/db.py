"""Engine and session factory.

One engine per database URL per process. Callers own transactions:
``with session_factory().begin() as session: ...``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from worker.config import Settings, get_settings

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def _configure_sqlite(engine: Engine) -> None:
    # pysqlite's own transaction handling defers BEGIN and breaks SAVEPOINT; take control of it.
    # BEGIN IMMEDIATE takes the write lock up front, so two writers queue on busy_timeout
    # instead of deadlocking when both try to upgrade a read lock.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):  # type: ignore[no-untyped-def]
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def get_engine(settings: Settings | None = None) -> Engine:
    """The process's engine for ``settings.database_url`` (created on first use)."""
    settings = settings or get_settings()
    url = settings.database_url
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            if url.startswith("sqlite"):
                engine = create_engine(url, connect_args={"timeout": 30})
                _configure_sqlite(engine)
            else:
                engine = create_engine(
                    url,
                    pool_size=10,
                    max_overflow=20,
                    pool_pre_ping=True,
                    # A request waits at most this long for a pooled connection: with the
                    # database down the answer is a prompt 503, not a hung worker.
                    pool_timeout=5,
                    connect_args={"connect_timeout": 5},
                )
            _engines[url] = engine
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
