"""Racing transactions: threads that start together, and a transaction made to wait on
another's lock (seen in pg_stat_activity) so the losing path runs every time, not by luck."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import text

from tests.support.processes import wait_until
from worker.infra.db import get_engine, transaction


def together(settings, n: int, work) -> list[Any]:
    """Run ``work(session, i)`` in n threads, each in its own committed transaction."""
    barrier = threading.Barrier(n)

    def one(i: int) -> Any:
        barrier.wait(timeout=20)
        try:
            with transaction(settings) as s:
                return work(s, i)
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(n) as pool:
        return [f.result(timeout=60) for f in [pool.submit(one, i) for i in range(n)]]


def _waiting_on_lock(settings) -> bool:
    with get_engine(settings).connect() as conn:
        return bool(
            conn.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'"
                )
            )
        )


def behind(settings, first, second) -> tuple[Any, Any]:
    """Run ``first`` in an open transaction, start ``second`` in another one, wait until it
    blocks on a lock, then commit ``first``; return both results (or ``second``'s error)."""

    def run_second() -> Any:
        try:
            with transaction(settings) as s:
                return second(s)
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(1) as pool:
        with transaction(settings) as s:
            a = first(s)
            future = pool.submit(run_second)
            wait_until(lambda: _waiting_on_lock(settings), timeout=20, what="a lock wait")
        return a, future.result(timeout=30)
