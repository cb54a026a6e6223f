"""Real processes and databases for tests: PostgreSQL databases, redis-server, gunicorn, Celery.

Nothing here mocks anything: each helper starts the real component and stops it by PID.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_DSN = os.environ.get(
    "TEST_PG_ADMIN_DSN", "host=127.0.0.1 port=5432 user=root dbname=postgres"
)
PG_URL_TEMPLATE = os.environ.get(
    "TEST_PG_URL_TEMPLATE", "postgresql+psycopg://root@127.0.0.1:5432/{name}"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def create_pg_database(prefix: str = "bw_test") -> tuple[str, str]:
    """Create an empty database with a unique name; returns (name, SQLAlchemy URL)."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name, PG_URL_TEMPLATE.format(name=name)


def drop_pg_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def process_env(**overrides: str) -> dict[str, str]:
    """The environment for a child process running this checkout's code."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "CELERY_"))}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(overrides)
    return env


def wait_until(predicate, timeout: float = 20.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)
    # The leader may exit before its children do (``serve``'s gunicorn, say): no straggler of
    # the group may outlive the test and load the machine for the next one.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def spawn(args: list[str], env: Mapping[str, str], log: Path) -> subprocess.Popen:
    """Start a child in its own process group (so stop() also reaches its children)."""
    handle = open(log, "ab")  # closed when the process ends
    return subprocess.Popen(
        args,
        env=dict(env),
        cwd=ROOT,
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


@contextmanager
def redis_server(tmp: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """A private redis-server on a spare port; yields (url, process)."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port()
    proc = spawn(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp),
        ],
        os.environ,
        tmp / f"redis-{port}.log",
    )
    url = f"redis://127.0.0.1:{port}/0"

    def up() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            return False

    wait_until(up, what="redis-server")
    try:
        yield url, proc
    finally:
        stop(proc)


@contextmanager
def gunicorn(
    env: Mapping[str, str],
    tmp: Path,
    workers: int = 2,
    port: int | None = None,
    extra: list[str] | None = None,
) -> Iterator[str]:
    """``gunicorn 'webhooks:create_app()'`` on a free port; yields its base URL."""
    port = port or free_port()
    proc = spawn(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "python:worker.gunicorn_conf",  # as the Procfile runs it
            "webhooks:create_app()",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--graceful-timeout",
            "5",
            *(extra or []),
        ],
        env,
        tmp / f"gunicorn-{port}.log",
    )
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited: {(tmp / f'gunicorn-{port}.log').read_text()}")
        try:
            return httpx.get(base + "/healthz", timeout=1).status_code in (200, 503)
        except httpx.HTTPError:
            return False

    wait_until(healthy, timeout=30, what="gunicorn")
    try:
        yield base
    finally:
        stop(proc)


def celery_worker(
    env: Mapping[str, str], tmp: Path, concurrency: int = 2, extra: list[str] | None = None
) -> subprocess.Popen:
    """Start ``celery -A worker worker``; the caller stops it with stop()."""
    return spawn(
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
            *(extra or []),
        ],
        env,
        tmp / "celery-worker.log",
    )
