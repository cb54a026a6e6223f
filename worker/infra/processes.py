"""Child processes in their own process group, stopped by PID with everything they started.

``billing-worker serve`` runs gunicorn and a Celery worker through these functions; the tests
and benchmarks start the same command lines the same way (``benchmarks.support``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path


def gunicorn_command(bind: str, workers: int = 2, extra: Sequence[str] = ()) -> list[str]:
    """``gunicorn 'webhooks:create_app()'`` with the Procfile's config module."""
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        "python:worker.gunicorn_conf",
        "webhooks:create_app()",
        "--bind",
        bind,
        "--workers",
        str(workers),
        *extra,
    ]


def web_command(
    bind: str, workers: int = 2, threads: int = 4, extra: Sequence[str] = ()
) -> list[str]:
    """The Procfile's web server (granian, ``worker.infra.web_server``)."""
    return [
        sys.executable,
        "-m",
        "worker.infra.web_server",
        "--bind",
        bind,
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        *extra,
    ]


def celery_command(concurrency: int = 2, extra: Sequence[str] = ()) -> list[str]:
    """``celery -A worker worker`` (add ``--beat`` in ``extra`` for the embedded scheduler)."""
    return [
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
        *extra,
    ]


def spawn(
    args: Sequence[str],
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
    cwd: Path | str | None = None,
) -> subprocess.Popen:
    """Start a child in its own process group (so stop() also reaches its children).

    Its output is appended to ``log``, or without one goes where this process's goes.
    """
    environment = dict(env) if env is not None else None
    if log is None:
        return subprocess.Popen(list(args), env=environment, cwd=cwd, start_new_session=True)
    with open(log, "ab") as handle:  # the child holds its own copy
        return subprocess.Popen(
            list(args),
            env=environment,
            cwd=cwd,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_all(
    processes: Iterable[subprocess.Popen], sig: int = signal.SIGTERM, timeout: float = 10
) -> None:
    """Send ``sig`` to each running child's group, wait up to ``timeout`` for them all, then
    SIGKILL what is left. A leader may exit before its children do (gunicorn's workers, say):
    no straggler of a group outlives the call."""
    running = [p for p in processes if p.poll() is None]
    for process in running:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)
    deadline = time.monotonic() + timeout
    for process in running:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(max(0.0, deadline - time.monotonic()))
    for process in running:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(5)


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
    """stop_all() for one child."""
    stop_all([process], sig, timeout)
