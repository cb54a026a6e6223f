"""Shared process and load-generator plumbing: gunicorn, celery and wrk, started one way.

The services are the real ones (``benchmarks.support`` starts them with this checkout on
PYTHONPATH); every benchmark gets the run's private redis-server through ``ctx.redis_url``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks.clients import API_KEY, WEBHOOK_SECRET
from benchmarks.common import Context
from benchmarks.support import USAGE_PRICING_TOML as PRICING
from benchmarks.support import celery_worker, gunicorn, process_env
from worker.infra.processes import stop

# The one web server and Celery worker every HTTP benchmark shares (started once per run).
WEB_WORKERS = 3
WEB_THREADS = 4
CELERY_CONCURRENCY = 2

# gthread keeps connections alive (sync closes each one and lingers for the client's FIN);
# it measured ~40% more req/s than sync workers on this machine.
GTHREAD = ["--worker-class", "gthread", "--threads"]


def workdir(ctx: Context, name: str) -> Path:
    path = Path(ctx.workdir) / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def env(ctx: Context, **overrides: str) -> dict[str, str]:
    """The service environment: the scratch database, the private broker, plus overrides."""
    return process_env(DATABASE_URL=ctx.database_url, CELERY_BROKER_URL=ctx.redis_url, **overrides)


@contextmanager
def web(
    environment: dict[str, str], where: Path, workers: int = 2, threads: int = 2
) -> Iterator[str]:
    """gunicorn with gthread workers; yields the base URL."""
    with gunicorn(environment, where, workers=workers, extra=[*GTHREAD, str(threads)]) as base:
        yield base


@contextmanager
def celery(environment: dict[str, str], where: Path, concurrency: int = 2) -> Iterator[None]:
    """A Celery worker for the block (stopped with SIGTERM, then killed if it lingers)."""
    proc = celery_worker(environment, where, concurrency, extra=["--loglevel", "WARNING"])
    try:
        yield
    finally:
        stop(proc)


def wrk(
    base: str,
    script: Path,
    seconds: float,
    connections: int,
    threads: int = 2,
    script_args: tuple[str, ...] = (),
) -> dict[str, float]:
    """Run ``wrk --latency`` with a Lua script; returns requests, rps, p50/p99 (ms), errors."""
    binary = shutil.which("wrk")
    if binary is None:
        raise RuntimeError("wrk is not installed (apt-get install -y wrk)")
    args = [binary, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s"]
    args += ["--latency", "-s", str(script), base]
    if script_args:
        args += ["--", *script_args]
    output = subprocess.run(
        args, capture_output=True, text=True, check=True, timeout=seconds + 60
    ).stdout
    total = re.search(r"(\d+) requests in ([\d.]+)(\w+)", output)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if total is None:
        raise RuntimeError(f"cannot read wrk output:\n{output}")
    return {
        "requests": int(total.group(1)),
        "seconds": _ms(total.group(2) + total.group(3)) / 1000,
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "p50": _ms(re.search(r"^\s+50%\s+(\S+)", output, re.M).group(1)),
        "p99": _ms(re.search(r"^\s+99%\s+(\S+)", output, re.M).group(1)),
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "errors": sum(int(g) for g in socket.groups()) if socket else 0,
    }


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def shared(ctx: Context) -> str:
    """The run's gunicorn (WEB_WORKERS gthread workers x WEB_THREADS) and Celery worker,
    started on first use with every setting the benchmarks need and stopped at the end of the
    run; returns the base URL. One start-up per run instead of one per module."""
    if "base" not in ctx.shared:
        where = workdir(ctx, "services")
        pricing = where / "pricing.toml"
        pricing.write_text(PRICING)
        environment = env(
            ctx,
            BILLING_API_KEY=API_KEY,
            DODO_WEBHOOK_SECRET=WEBHOOK_SECRET,
            PRICING_FILE=str(pricing),
            INBOX_SWEEP_SECONDS="30",
        )
        ctx.stack.enter_context(celery(environment, where, CELERY_CONCURRENCY))
        base = ctx.stack.enter_context(web(environment, where, WEB_WORKERS, WEB_THREADS))
        ctx.shared["base"] = base
    return ctx.shared["base"]


def describe() -> str:
    return (
        f"gunicorn {WEB_WORKERS} gthread workers x{WEB_THREADS} threads, "
        f"Celery concurrency {CELERY_CONCURRENCY}"
    )
