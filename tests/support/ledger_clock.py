"""Entries posted through the real pipeline at a chosen moment: the reports' tests need
ledgers spread over days, weeks and DST changes. Only the clock the pipeline stamps
``created_at`` with is set; nothing else of the posting is touched."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from worker import ledger
from worker.ledger import posting, transactional

_MODULES = (posting, transactional)


@contextmanager
def clock_at(moment: datetime) -> Iterator[None]:
    """Entries posted inside the block are created at ``moment``."""
    saved = [m.utcnow for m in _MODULES]
    for m in _MODULES:
        m.utcnow = lambda: moment  # type: ignore[attr-defined]
    try:
        yield
    finally:
        for m, original in zip(_MODULES, saved, strict=True):
            m.utcnow = original  # type: ignore[attr-defined]


def post_at(
    tx: Any, moment: datetime, customer_id: str, amount: int, *, credit: bool, **kw: Any
) -> ledger.Posted:
    """One credit or debit of ``customer_id``'s wallet, created at ``moment``."""
    leg = ledger.Leg(customer_id, kw.pop("currency", "USD"), amount, is_credit=credit, **kw)
    with clock_at(moment), tx() as s:
        return ledger.post(s, [leg])[0]
