"""Expiring credit, exactly once: one ``expiration`` entry per lot past its ``expires_at``.

Each expiration is keyed by its lot (``expire:{lot_id}``, a system key), so overlapping runs,
a run killed halfway and a retried batch write it once. It takes what remains of the lot when
the wallet is locked: a lot is spendable only until ``expires_at`` (``lots.Lot.live``), so what
remains then is what remained at its expiry, and a debit racing the expiry either committed
first (and the expiration takes the rest) or finds the lot no longer live.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from worker.config import Settings
from worker.infra.db import settings_of, transaction
from worker.ledger.keys import system_key
from worker.ledger.legs import Leg, OnShort, Posted
from worker.ledger.posting import post
from worker.models import CreditLot, LotNotice, utcnow
from worker.notify.outbox import enqueue_event

BATCH_SIZE = 500


@dataclass
class ExpiryRun:
    expired_lots: int = 0
    expired_amount: int = 0  # summed across currencies: a count for the log, not money
    noticed: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "expired_lots": self.expired_lots,
            "expired_amount": self.expired_amount,
            "noticed": self.noticed,
        }


def expire_credits(settings: Settings, *, batch_size: int = BATCH_SIZE) -> ExpiryRun:
    """Expire every lot past its expiry, ``batch_size`` lots per transaction, then send the
    notices of lots expiring within ``CREDIT_EXPIRY_NOTICE_DAYS``."""
    run = ExpiryRun()
    while True:
        with transaction(settings) as session:
            selected, posted = expire_batch(session, limit=batch_size)
        run.expired_lots += len(posted)
        run.expired_amount += sum(p.entry.amount for p in posted)
        # Fewer than a batch means none is left; a batch that wrote nothing is a run that an
        # overlapping one got ahead of (it will expire what remains).
        if selected < batch_size or not posted:
            break
    with transaction(settings) as session:
        run.noticed = notice_expiring(session)
    return run


def expire_batch(
    session: Session, *, limit: int = BATCH_SIZE, now: datetime | None = None
) -> tuple[int, list[Posted]]:
    """Write the expirations of up to ``limit`` lots past their expiry, in the caller's
    transaction, each with its ``wallet.credits_expired`` notice; (lots selected, posted)."""
    now = now or utcnow()
    lots = session.execute(
        select(
            CreditLot.id,
            CreditLot.customer_id,
            CreditLot.currency,
            CreditLot.remaining,
            CreditLot.category,
            CreditLot.expires_at,
        )
        .where(CreditLot.remaining > 0, CreditLot.expires_at <= now)
        .order_by(CreditLot.expires_at, CreditLot.seq)
        .limit(limit)
    ).all()
    if not lots:
        return 0, []
    legs = [
        Leg(
            customer_id=lot.customer_id,
            currency=lot.currency,
            amount=lot.remaining,
            is_credit=False,
            event_type="expiration",
            reason="credit expired",
            reference_object_id=lot.id,
            key=system_key("expire", lot.id),
            # What remains when the wallet is locked (never more than read here).
            on_short=OnShort.TAKE,
            lot_id=lot.id,
            actor="system",
        )
        for lot in lots
    ]
    posted = []
    for lot, result in zip(lots, post(session, legs, duplicates="skip"), strict=True):
        if not isinstance(result, Posted):
            continue  # expired by an overlapping run, or nothing was left
        posted.append(result)
        enqueue_event(session, "wallet.credits_expired", _expired_data(lot, result))
    return len(lots), posted


def notice_expiring(session: Session, *, now: datetime | None = None) -> int:
    """One ``wallet.credits_expiring`` per lot that expires within the notice window and
    still holds something; how many were sent. A lot's notice row and its message commit
    together, and the row's primary key makes a second notice impossible."""
    now = now or utcnow()
    window = timedelta(days=settings_of(session).credit_expiry_notice_days)
    noticed = select(LotNotice.lot_id).where(
        LotNotice.lot_id == CreditLot.id, LotNotice.kind == "expiring"
    )
    lots = session.execute(
        select(
            CreditLot.id,
            CreditLot.customer_id,
            CreditLot.currency,
            CreditLot.remaining,
            CreditLot.category,
            CreditLot.expires_at,
        )
        .where(
            CreditLot.remaining > 0,
            CreditLot.expires_at > now,
            CreditLot.expires_at <= now + window,
            ~noticed.exists(),
        )
        .order_by(CreditLot.expires_at, CreditLot.seq)
        .limit(BATCH_SIZE)
    ).all()
    if not lots:
        return 0
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    claimed = set(
        session.scalars(
            dialect.insert(LotNotice)
            .values([{"lot_id": lot.id, "kind": "expiring", "created_at": now} for lot in lots])
            .on_conflict_do_nothing()
            .returning(LotNotice.lot_id)
        )
    )
    for lot in lots:
        if lot.id in claimed:  # an overlapping run did not claim it first
            enqueue_event(session, "wallet.credits_expiring", _lot_data(lot))
    return len(claimed)


def _lot_data(lot: Any) -> dict[str, Any]:
    return {
        "customer_id": lot.customer_id,
        "currency": lot.currency,
        "lot_id": lot.id,
        "category": lot.category,
        "remaining": lot.remaining,
        "expires_at": _iso(lot.expires_at),
    }


def _expired_data(lot: Any, posted: Posted) -> dict[str, Any]:
    return {
        **_lot_data(lot),
        "remaining": 0,
        "expired": posted.entry.amount,
        "ledger_entry_id": posted.entry.id,
        "balance": posted.entry.after_balance,
    }


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")
