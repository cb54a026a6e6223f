"""Credit lots for tests, made through the posting pipeline: credits with a category and an
expiry, debits, and a lot that has really expired (credited to expire a moment later, waited
for, then taken by its ``expiration`` entry as the expiry task would)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from worker import ledger
from worker.ledger.keys import system_key
from worker.models import CreditLot, utcnow

# Far enough ahead that a lot credited to expire then is still live when the test reads it.
DAY = timedelta(days=1)


def credit(tx: Any, customer_id: str, amount: int, **kw: Any) -> tuple[ledger.Posted, str]:
    """Post a credit; (its result, the id of the lot it created)."""
    leg = ledger.Leg(customer_id, kw.pop("currency", "USD"), amount, is_credit=True, **kw)
    with tx() as s:
        posted = ledger.post(s, [leg])[0]
        lot_id = s.scalar(select(CreditLot.id).where(CreditLot.entry_id == posted.entry.id))
    return posted, lot_id


def debit(tx: Any, customer_id: str, amount: int, **kw: Any) -> ledger.Posted:
    leg = ledger.Leg(customer_id, kw.pop("currency", "USD"), amount, is_credit=False, **kw)
    with tx() as s:
        return ledger.post(s, [leg])[0]


def expiring_lot(tx: Any, customer_id: str, amount: int, **kw: Any) -> tuple[str, datetime]:
    """A lot credited to expire 0.3 s from now; (its id, its expires_at). Not waited for."""
    moment = utcnow() + timedelta(seconds=0.3)
    _, lot_id = credit(tx, customer_id, amount, expires_at=moment, **kw)
    return lot_id, moment


def wait_until_past(moment: datetime) -> None:
    while utcnow() <= moment:
        time.sleep(0.02)


def expire(tx: Any, customer_id: str, lot_id: str, currency: str = "USD") -> ledger.Posted:
    """The lot's ``expiration`` entry, as ``worker.ledger.expiry`` writes it: what remains."""
    with tx() as s:
        remaining = s.scalar(select(CreditLot.remaining).where(CreditLot.id == lot_id))
        leg = ledger.Leg(
            customer_id,
            currency,
            remaining,
            is_credit=False,
            event_type="expiration",
            reason="credit expired",
            reference_object_id=lot_id,
            key=system_key("expire", lot_id),
            on_short=ledger.OnShort.TAKE,
            lot_id=lot_id,
        )
        return ledger.post(s, [leg])[0]
