"""The whole service as real processes, with knobs to break it.

A ``Stack`` runs gunicorn, a Celery worker and (optionally) beat against a private Redis and
either the shared PostgreSQL (a fresh database) or a private PostgreSQL instance that a test
may stop and restart. Every process is stopped by PID when the stack closes.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

from tests.faults.pg_instance import PostgresInstance
from tests.support import (
    create_pg_database,
    drop_pg_database,
    free_port,
    process_env,
    spawn,
    stop,
    wait_until,
)
from worker import migrate
from worker.config import Settings


class Stack:
    def __init__(self, tmp: Path, *, private_postgres: bool = False, **env: str) -> None:
        self.tmp = tmp
        self.private_postgres = private_postgres
        self.extra_env = env
        self.pg: PostgresInstance | None = None
        self.db_name: str | None = None
        self.redis_port = free_port()
        self.redis: subprocess.Popen | None = None
        self.web: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None
        self.beat: subprocess.Popen | None = None
        self.web_port = free_port()

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> Stack:
        if self.private_postgres:
            self.pg = PostgresInstance().init()
            self.database_url = self.pg.url
        else:
            self.db_name, self.database_url = create_pg_database("bw_fault")
        migrate.upgrade(Settings(database_url=self.database_url))
        self.start_redis()
        self.env = process_env(
            DATABASE_URL=self.database_url,
            CELERY_BROKER_URL=self.broker_url,
            BILLING_API_KEY="fault-key",
            **self.extra_env,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in (self.web, self.worker, self.beat, self.redis):
            if proc is not None:
                stop(proc, timeout=5)
        from worker.db import dispose_engines

        dispose_engines()
        if self.pg is not None:
            self.pg.destroy()
        if self.db_name:
            drop_pg_database(self.db_name)

    @property
    def broker_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    # -- redis -------------------------------------------------------------------------------
    def start_redis(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.redis = spawn(
            [
                binary,
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.tmp),
            ],
            os.environ,
            self.tmp / "redis.log",
        )

        def up() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", self.redis_port), timeout=0.2):
                    return True
            except OSError:
                return False

        wait_until(up, what="redis-server")

    def stop_redis(self) -> None:
        assert self.redis is not None
        stop(self.redis, signal.SIGKILL)

    # -- web / worker / beat -------------------------------------------------------------------
    def start_web(self, workers: int = 2) -> None:
        self.web = spawn(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "webhooks:create_app()",
                "--bind",
                f"127.0.0.1:{self.web_port}",
                "--workers",
                str(workers),
                "--graceful-timeout",
                "3",
            ],
            self.env,
            self.tmp / "gunicorn.log",
        )

        def healthy() -> bool:
            try:
                return httpx.get(self.base_url + "/healthz", timeout=1).status_code in (200, 503)
            except httpx.HTTPError:
                return False

        wait_until(healthy, timeout=30, what="gunicorn")

    def start_worker(self, concurrency: int = 2, *extra: str) -> None:
        self.worker = spawn(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "worker",
                "worker",
                "--loglevel",
                "INFO",
                "--concurrency",
                str(concurrency),
                "--without-gossip",
                "--without-mingle",
                *extra,
            ],
            self.env,
            self.tmp / "worker.log",
        )

    def kill_worker(self) -> None:
        """SIGKILL the worker's whole process group: no clean shutdown, no acks."""
        assert self.worker is not None
        stop(self.worker, signal.SIGKILL)

    def start_beat(self) -> None:
        self.beat = spawn(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "worker",
                "beat",
                "--loglevel",
                "INFO",
                "--schedule",
                str(self.tmp / "beat-schedule"),
            ],
            self.env,
            self.tmp / "beat.log",
        )

    # -- checks --------------------------------------------------------------------------------
    def scalar(self, sql: str, **params: object) -> object:
        engine = create_engine(self.database_url)
        try:
            with engine.connect() as conn:
                return conn.execute(text(sql), params).scalar()
        finally:
            engine.dispose()

    def bank_invariant(self) -> list[str]:
        """Per currency: Σ balances == Σ credits - Σ debits; no negative balance; a clean chain."""
        from worker.db import transaction
        from worker.ledger import verify

        settings = Settings(database_url=self.database_url)
        problems: list[str] = []
        engine = create_engine(self.database_url)
        try:
            with engine.connect() as conn:
                rows = conn.execute(
                    text("""
                    SELECT w.currency, w.total, COALESCE(e.net, 0) AS net FROM
                      (SELECT currency, SUM(balance) AS total FROM wallets GROUP BY currency) w
                    LEFT JOIN
                      (SELECT currency, SUM(CASE WHEN is_credit THEN amount ELSE -amount END)
                       AS net FROM ledger_entries GROUP BY currency) e
                    ON e.currency = w.currency
                """)
                ).all()
                problems += [
                    f"{r.currency}: balances {r.total} != ledger {r.net}"
                    for r in rows
                    if r.total != r.net
                ]
                negative = conn.execute(text("SELECT count(*) FROM wallets WHERE balance < 0"))
                if negative.scalar():
                    problems.append("negative balance")
        finally:
            engine.dispose()
        with transaction(settings) as session:
            problems += verify(session).problems
        return problems
