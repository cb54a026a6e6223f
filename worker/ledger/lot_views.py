"""Reading credit lots: a customer's lots by status, one entry with the lots behind it, and
how much of each wallet expires soon.

Nothing here writes. Each reader judges a lot's status against one ``now``, so a page never
shows a lot as both live and expired (the same rule ``lots.Lot.live`` applies when spending:
a lot is live until its ``expires_at``, not until the expiry task gets to it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, get_args

from sqlalchemy import BigInteger, Select, and_, case, cast, func, not_, or_, select
from sqlalchemy.orm import Session

from worker.errors import EntryNotFound, ValidationFailed
from worker.infra.db import settings_of
from worker.ledger.customers import get_customer
from worker.ledger.validation import validate_currency, validate_page
from worker.models import CreditLot, LedgerEntry, LotConsumption, utcnow

LotStatus = Literal["active", "expired", "consumed"]
LOT_STATUSES: tuple[str, ...] = get_args(LotStatus)

# The order a debit draws lots in (worker.ledger.lots.spending_order, and the index
# ix_credit_lots_spending): soonest expiry first, never-expiring last, promotional before
# paid ('promotional' > 'paid'), oldest first.
SPENDING_ORDER = (
    CreditLot.expires_at.is_(None),
    CreditLot.expires_at,
    CreditLot.category.desc(),
    CreditLot.seq,
)


def lot_status(lot: CreditLot, now: datetime) -> LotStatus:
    """``active`` (holds something spendable), ``consumed`` (spent to 0 before any of it
    expired) or ``expired`` (past ``expires_at`` with something left or already expired)."""
    if lot.remaining > 0 and (lot.expires_at is None or lot.expires_at > now):
        return "active"
    if lot.remaining == 0 and lot.expired == 0:
        return "consumed"
    return "expired"


def _status_filter(status: str, now: datetime) -> Any:
    t = CreditLot
    active = and_(t.remaining > 0, or_(t.expires_at.is_(None), t.expires_at > now))
    consumed = and_(t.remaining == 0, t.expired == 0)
    if status == "active":
        return active
    if status == "consumed":
        return consumed
    # What is neither: past its expiry holding something, or taken by its expiration.
    return and_(not_(active), not_(consumed))


def validate_status(value: Any) -> str:
    if value not in LOT_STATUSES:
        raise ValidationFailed("status", f"must be one of {', '.join(LOT_STATUSES)}")
    return value


def list_lots(
    session: Session,
    customer_id: str,
    *,
    currency: str | None = None,
    status: str | None = None,
    page_number: int = 0,
    page_size: int = 10,
    now: datetime | None = None,
) -> list[CreditLot]:
    """The customer's lots, newest first, optionally of one currency and status (judged at
    ``now``; pass the same ``now`` to ``lot_status`` when showing them)."""
    page_number, page_size = validate_page(page_number, page_size)
    query: Select[tuple[CreditLot]] = select(CreditLot).where(CreditLot.customer_id == customer_id)
    if currency is not None:
        query = query.where(CreditLot.currency == validate_currency(session, currency))
    if status is not None:
        query = query.where(_status_filter(validate_status(status), now or utcnow()))
    get_customer(session, customer_id)
    query = query.order_by(CreditLot.seq.desc())
    return list(session.scalars(query.offset(page_number * page_size).limit(page_size)))


@dataclass(frozen=True)
class EntryDetail:
    """An entry and the lots behind it: for a credit the lot it created, for a debit what it
    took from which lots (``None``: not recorded, an entry posted before lots existed)."""

    entry: LedgerEntry
    lot: CreditLot | None
    consumed: list[tuple[str, int]] | None


def entry_detail(session: Session, customer_id: str, entry_id: str) -> EntryDetail:
    """One of the customer's entries with its lots; ``EntryNotFound`` for an unknown id and
    for another customer's entry alike."""
    entry = session.scalar(
        select(LedgerEntry).where(
            LedgerEntry.id == entry_id, LedgerEntry.customer_id == customer_id
        )
    )
    if entry is None:
        get_customer(session, customer_id)  # an unknown customer is CustomerNotFound
        raise EntryNotFound(entry_id)
    if entry.is_credit:
        lot = session.scalar(select(CreditLot).where(CreditLot.entry_id == entry.id))
        return EntryDetail(entry, lot, None)
    # Consumptions keep no order of their own; the lots' spending order is the order the
    # debit drew them in (a reversal's own top-up lot, which it takes first, excepted).
    rows = session.execute(
        select(LotConsumption.lot_id, LotConsumption.amount)
        .join(CreditLot, CreditLot.id == LotConsumption.lot_id)
        .where(LotConsumption.entry_id == entry.id)
        .order_by(*SPENDING_ORDER)
    ).all()
    return EntryDetail(entry, None, [(r.lot_id, r.amount) for r in rows] or None)


@dataclass(frozen=True)
class ExpirySummary:
    """What of a wallet's live credit expires within the notice window, and the soonest
    expiry of its live lots."""

    expiring_soon: int = 0
    next_expiry_at: datetime | None = None


def expiry_summaries(
    session: Session, customer_id: str, *, now: datetime | None = None
) -> dict[str, ExpirySummary]:
    """Per currency, for every wallet of the customer in one query (over the spending index:
    live lots that do expire). A currency without expiring live lots is absent."""
    now = now or utcnow()
    horizon = now + timedelta(days=settings_of(session).credit_expiry_notice_days)
    t = CreditLot
    soon = func.sum(case((t.expires_at <= horizon, t.remaining), else_=0))
    rows = session.execute(
        select(t.currency, cast(soon, BigInteger), func.min(t.expires_at))
        .where(
            t.customer_id == customer_id,
            t.remaining > 0,
            t.expires_at.is_not(None),
            t.expires_at > now,
        )
        .group_by(t.currency)
    ).all()
    return {currency: ExpirySummary(int(amount), first) for currency, amount, first in rows}
