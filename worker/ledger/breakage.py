"""Breakage: how much credit expired unspent in a period, per currency, paid and promotional
apart (finance recognises expired paid credit as revenue; expired promotional credit never
was money).

An expiration is dated by its ``expiration`` entry's ``created_at`` (when the expiry task took
the lot), not by the lot's ``expires_at``: the ledger entry is what the books contain, and a
period once reported does not change when the task runs late.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import BigInteger, cast, func, select
from sqlalchemy.orm import Session

from worker.errors import ValidationFailed
from worker.infra.db import settings_of
from worker.models import CreditLot, LedgerEntry, LotConsumption


@dataclass(frozen=True)
class ExpiredTotals:
    """What expired in one currency (minor units), and from how many lots."""

    currency: str
    paid: int = 0
    promotional: int = 0
    lots: int = 0

    @property
    def total(self) -> int:
        return self.paid + self.promotional


def expired_between(session: Session, start: datetime, end: datetime) -> list[ExpiredTotals]:
    """Credit expired in ``[start, end)``: one line per configured currency (zeros included,
    so a report always shows every book), then any other currency that expired something."""
    for field, value in (("from", start), ("to", end)):
        if value.tzinfo is None:
            raise ValidationFailed(field, "needs a time zone (RFC 3339)")
    if end <= start:
        raise ValidationFailed("to", "must be after from")
    # Each expiration consumes exactly its one lot, so the lot's category splits it.
    rows = session.execute(
        select(
            CreditLot.currency,
            CreditLot.category,
            cast(func.sum(LotConsumption.amount), BigInteger),
            func.count(LotConsumption.lot_id.distinct()),
        )
        .select_from(LedgerEntry)
        .join(LotConsumption, LotConsumption.entry_id == LedgerEntry.id)
        .join(CreditLot, CreditLot.id == LotConsumption.lot_id)
        .where(
            LedgerEntry.event_type == "expiration",
            LedgerEntry.created_at >= start.astimezone(UTC),
            LedgerEntry.created_at < end.astimezone(UTC),
        )
        .group_by(CreditLot.currency, CreditLot.category)
    ).all()
    found: dict[str, dict[str, int]] = {}
    for currency, category, amount, lots in rows:
        line = found.setdefault(currency, {"lots": 0})
        line[category] = int(amount)
        line["lots"] += int(lots)
    currencies = list(settings_of(session).wallet_currencies)
    currencies += sorted(set(found) - set(currencies))
    return [ExpiredTotals(currency, **found.get(currency, {})) for currency in currencies]
