"""Real components for benchmarks and tests: scratch PostgreSQL databases, a private
redis-server, the web server (granian, or gunicorn) and Celery started healthy with this
checkout on PYTHONPATH.

Nothing here mocks anything: each helper starts the real component and stops it by PID
(``worker.infra.processes``, which ``billing-worker serve`` uses too). The tests import these
through ``tests.support.processes``; this module imports nothing from ``tests/``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg

from worker.infra import processes
from worker.infra.processes import celery_command, gunicorn_command, stop, web_command

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_DSN = os.environ.get(
    "TEST_PG_ADMIN_DSN", "host=127.0.0.1 port=5432 user=root dbname=postgres"
)
PG_URL_TEMPLATE = os.environ.get(
    "TEST_PG_URL_TEMPLATE", "postgresql+psycopg://root@127.0.0.1:5432/{name}"
)


# Two USD prices (a per-call one and a per-token one), the usage tests' and benchmarks' tariff.
USAGE_PRICING_TOML = """
[prices.api_call]
currency = "USD"
unit_amount = "0.3"

[prices.llm_tokens]
currency = "USD"
unit_amount = "0.002"
quantity_key = "tokens"
"""


def redis_command(port: int, directory: Path) -> list[str]:
    """``redis-server`` on 127.0.0.1:``port``, nothing persisted."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    return [*args, "--appendonly", "no", "--dir", str(directory)]


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


def spawn(args: list[str], env: Mapping[str, str], log: Path) -> subprocess.Popen:
    """``worker.infra.processes.spawn`` in this checkout's root, output appended to ``log``."""
    return processes.spawn(args, env, log, cwd=ROOT)


@contextmanager
def redis_server(tmp: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """A private redis-server on a spare port; yields (url, process)."""
    port = free_port()
    proc = spawn(redis_command(port, tmp), os.environ, tmp / f"redis-{port}.log")
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
    """``gunicorn 'webhooks:create_app()'`` with the config module on a free port; yields its
    base URL once /healthz answers."""
    port = port or free_port()
    args = gunicorn_command(
        f"127.0.0.1:{port}", workers, ["--graceful-timeout", "5", *(extra or [])]
    )
    with _healthy(args, env, tmp / f"gunicorn-{port}.log", port, "gunicorn") as base:
        yield base


@contextmanager
def web_server(
    env: Mapping[str, str],
    tmp: Path,
    workers: int = 2,
    threads: int = 4,
    port: int | None = None,
    extra: list[str] | None = None,
) -> Iterator[str]:
    """The Procfile's web server (granian, ``worker.infra.web_server``) on a free port; yields
    its base URL once /healthz answers."""
    port = port or free_port()
    args = web_command(
        f"127.0.0.1:{port}", workers, threads, ["--graceful-timeout", "5", *(extra or [])]
    )
    with _healthy(args, env, tmp / f"web-{port}.log", port, "the web server") as base:
        # /healthz answers once one worker is up; each granian worker opens its own listener
        # (SO_REUSEPORT) only when it has started, and connections made before that all go to
        # the workers already listening (a keep-alive client stays there): wait for every one.
        wait_until(lambda: listeners(port) >= workers, timeout=90, what="every worker")
        yield base


def tcp_rows(port: int) -> Iterator[list[str]]:
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                yield fields


def listeners(port: int) -> int:
    """Listening sockets on ``port`` (one per granian worker; gunicorn's workers share one)."""
    return sum(1 for fields in tcp_rows(port) if fields[3] == "0A")


@contextmanager
def _healthy(
    args: list[str], env: Mapping[str, str], log: Path, port: int, what: str
) -> Iterator[str]:
    proc = spawn(args, env, log)
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited: {log.read_text()}")
        try:
            return httpx.get(base + "/healthz", timeout=1).status_code in (200, 503)
        except httpx.HTTPError:
            return False

    wait_until(healthy, timeout=90, what=what)  # a loaded 2-core machine: 20 s seen
    try:
        yield base
    finally:
        stop(proc)


def celery_worker(
    env: Mapping[str, str], tmp: Path, concurrency: int = 2, extra: list[str] | None = None
) -> subprocess.Popen:
    """Start ``celery -A worker worker``; the caller stops it with stop()."""
    args = celery_command(concurrency, ["--without-gossip", "--without-mingle", *(extra or [])])
    return spawn(args, env, tmp / "celery-worker.log")
