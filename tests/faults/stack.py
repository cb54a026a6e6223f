"""The whole service as real processes, with knobs to break it.

A ``Stack`` runs gunicorn, a Celery worker and (optionally) beat against a private Redis and
either the shared PostgreSQL (a fresh database) or a private PostgreSQL instance that a test
may stop and restart. Every process is stopped by PID when the stack closes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

from benchmarks.support import redis_command
from tests.faults.pg_instance import PostgresInstance
from tests.support.processes import (
    create_pg_database,
    drop_pg_database,
    free_port,
    process_env,
    spawn,
    stop,
    wait_until,
)
from tests.support.usage import PRICING_TOML
from tests.support.webhooks import DODO_SECRET
from worker.config import Settings
from worker.infra import migrate
from worker.infra.processes import celery_command

API_KEY = "fault-key-0123456789abcdefghijklmnopq"


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
        self._ready_before = 0

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> Stack:
        if self.private_postgres:
            self.pg = PostgresInstance().init()
            self.database_url = self.pg.url
        else:
            self.db_name, self.database_url = create_pg_database("bw_fault")
        migrate.upgrade(Settings(database_url=self.database_url))
        self.start_redis()
        pricing = self.tmp / "pricing.toml"
        pricing.write_text(PRICING_TOML)
        self.env = process_env(
            DATABASE_URL=self.database_url,
            CELERY_BROKER_URL=self.broker_url,
            BILLING_API_KEY=API_KEY,
            DODO_WEBHOOK_SECRET=DODO_SECRET,
            PRICING_FILE=str(pricing),
            **self.extra_env,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        procs = [p for p in (self.web, self.worker, self.beat, self.redis) if p is not None]
        for proc in procs:  # all at once: their shutdowns overlap
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            stop(proc, timeout=5)
        from worker.infra.db import dispose_engines

        dispose_engines()
        if self.pg is not None:
            self.pg.destroy()
        if self.db_name:
            drop_pg_database(self.db_name)

    @property
    def settings(self) -> Settings:
        return Settings(database_url=self.database_url)

    @property
    def broker_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    # -- redis -------------------------------------------------------------------------------
    def start_redis(self) -> None:
        self.redis = spawn(
            redis_command(self.redis_port, self.tmp),
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
        """SIGKILL: no save, no clean close; every queued message is gone with it."""
        assert self.redis is not None
        stop(self.redis, signal.SIGKILL)

    def restart_redis(self) -> None:
        """A fresh, empty redis-server on the same port (clients reconnect to the same URL)."""
        self.stop_redis()
        self.start_redis()

    # -- private postgres ----------------------------------------------------------------------
    def stop_postgres(self, mode: str = "immediate") -> None:
        """``immediate`` is a crash: no checkpoint, every connection cut; recovery on start."""
        assert self.pg is not None, "only a private PostgreSQL may be stopped"
        self.pg.stop(mode)

    def start_postgres(self) -> None:
        assert self.pg is not None
        self.pg.start()
        wait_until(self.pg.is_up, timeout=30, what="private PostgreSQL")

    # -- web / worker / beat -------------------------------------------------------------------
    def start_web(self, workers: int = 2, wait: bool = True) -> None:
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
        if wait:
            self.wait_web_ready()

    def wait_web_ready(self, timeout: float = 60) -> None:
        def healthy() -> bool:
            assert self.web is not None and self.web.poll() is None, "gunicorn exited"
            try:
                return httpx.get(self.base_url + "/healthz", timeout=3).status_code in (200, 503)
            except httpx.HTTPError:
                return False

        # Not too often: each probe costs CPU the starting workers need (2 cores).
        wait_until(healthy, timeout=timeout, interval=0.25, what="gunicorn")

    def start_worker(self, concurrency: int = 2, *extra: str) -> None:
        self._ready_before = self._ready_lines()
        self.worker = spawn(
            celery_command(concurrency, ["--without-gossip", "--without-mingle", *extra]),
            self.env,
            self.tmp / "worker.log",
        )

    def wait_worker_ready(self, timeout: float = 60) -> None:
        """Until the worker consumes (its log says ``ready``) after its latest start."""
        assert self.worker is not None
        wait_until(
            lambda: self._ready_lines() > self._ready_before,
            timeout=timeout,
            interval=0.1,
            what="celery worker ready",
        )

    def _ready_lines(self) -> int:
        log = self.tmp / "worker.log"
        return log.read_text(errors="replace").count(" ready.") if log.exists() else 0

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
        from worker.infra.db import transaction
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
