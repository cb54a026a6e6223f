"""Credits, debits and counts of one wallet per calendar bucket (``periods``), optionally per
event type or reason; or the exact usage cost per meter (event name).

Entries are bucketed by ``created_at``. Every figure is an exact sum of stored integers: the
buckets of a period add up to the period's entries, whatever the time zone.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any, Literal

from sqlalchemy import BigInteger, DateTime, case, cast, func, literal, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from worker.errors import ValidationFailed
from worker.ledger.schemas import USAGE_SCALE
from worker.models import LedgerEntry, UsageEvent, Wallet, utcnow
from worker.reports.balances import checked_wallet
from worker.reports.periods import Bucket, Interval, Period, buckets, period

GroupBy = Literal["event_type", "reason", "meter"]
GROUP_BYS: tuple[GroupBy, ...] = ("event_type", "reason", "meter")
# Usage events whose cost is known and counted: billed, owed, or waiting for the next batch.
PRICED = ("pending", "processed", "unbilled")


@dataclass(frozen=True)
class Line:
    """One bucket's figures for one group (None without ``group_by``)."""

    bucket: Bucket
    group: str | None
    credits: int
    debits: int
    count: int
    # group_by=meter: the exact usage cost, in 10**-12 minor units.
    cost_scaled: int | None = None

    @property
    def net(self) -> int:
        return self.credits - self.debits


@dataclass(frozen=True)
class Report:
    currency: str
    interval: Interval
    group_by: GroupBy | None
    period: Period
    lines: list[Line]
    # group_by=meter: the wallet's accrued usage not yet debited (10**-12 minor units).
    pending_usage_scaled: int | None = None


def analytics(
    session: Session,
    customer_id: str,
    currency: str,
    p: Period,
    interval: Interval,
    group_by: str | None = None,
) -> Report:
    """The wallet's figures per bucket of ``interval`` over ``p``: only buckets and groups
    that have entries (or usage events, for ``meter``), in time order, then by group."""
    if group_by is not None and group_by not in GROUP_BYS:
        raise ValidationFailed("group_by", f"must be one of {', '.join(GROUP_BYS)}")
    currency = checked_wallet(session, customer_id, currency)
    cuts = buckets(p, interval)
    if group_by == "meter":
        lines = _meters(session, customer_id, currency, p, cuts)
        pending = session.scalar(
            select(Wallet.pending_usage_scaled).where(
                Wallet.customer_id == customer_id, Wallet.currency == currency
            )
        )
        return Report(currency, interval, "meter", p, lines, int(pending or 0))
    lines = _entries(session, customer_id, currency, p, cuts, group_by)
    return Report(currency, interval, group_by, p, lines)  # type: ignore[arg-type]


def _bounds(cuts: list[Bucket]) -> Any:
    """The buckets' lower bounds as one ``timestamptz[]`` parameter (for ``width_bucket``)."""
    return cast(
        literal([c.start for c in cuts], ARRAY(DateTime(timezone=True))),
        ARRAY(DateTime(timezone=True)),
    )


def _entries(
    session: Session,
    customer_id: str,
    currency: str,
    p: Period,
    cuts: list[Bucket],
    group_by: str | None,
) -> list[Line]:
    if not cuts:
        return []
    e = LedgerEntry
    groups = [getattr(e, group_by)] if group_by else []
    where = (
        e.customer_id == customer_id,
        e.currency == currency,
        e.created_at >= p.start,
        e.created_at < p.end,
    )
    if session.get_bind().dialect.name == "postgresql":
        number = func.width_bucket(e.created_at, _bounds(cuts))
        credit = func.sum(case((e.is_credit, e.amount), else_=0))
        debit = func.sum(case((e.is_credit, 0), else_=e.amount))
        rows = session.execute(
            select(
                number,
                cast(credit, BigInteger),
                cast(debit, BigInteger),
                func.count(),
                *groups,
            )
            .where(*where)
            .group_by(number, *groups)
        ).all()
        found = {(r[0] - 1, r[4] if groups else None): (r[1], r[2], r[3]) for r in rows}
    else:
        # SQLite: the same boundaries, applied in Python to a streamed read.
        rows = session.execute(
            select(e.created_at, e.is_credit, e.amount, *groups).where(*where),
            execution_options={"yield_per": 5000},
        )
        found = _tally(cuts, ((r[0], r[3] if groups else None, r[1], r[2]) for r in rows))
    return _lines(cuts, found)


def _tally(
    cuts: list[Bucket], rows: Iterable[tuple[datetime, Any, bool, int]]
) -> dict[tuple[int, Any], tuple[int, ...]]:
    """(bucket index, group) -> (credits, debits, count), as ``width_bucket`` would give."""
    starts = [c.start for c in cuts]
    out: dict[tuple[int, Any], list[int]] = {}
    for created_at, group, is_credit, amount in rows:
        sums = out.setdefault((bisect_right(starts, created_at) - 1, group), [0, 0, 0])
        sums[0 if is_credit else 1] += amount
        sums[2] += 1
    return {k: tuple(v) for k, v in out.items()}


def _lines(cuts: list[Bucket], found: dict[tuple[int, Any], tuple[int, ...]]) -> list[Line]:
    lines = []
    for (index, group), figures in sorted(found.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        credits, debits, count = (int(x) for x in figures[:3])
        cost = int(figures[3]) if len(figures) > 3 else None
        lines.append(Line(cuts[index], group, credits, debits, count, cost))
    return lines


def _meters(
    session: Session, customer_id: str, currency: str, p: Period, cuts: list[Bucket]
) -> list[Line]:
    """Usage cost per event name, bucketed by the events' ``timestamp``: ``debits`` is the
    exact cost's whole minor units, the fraction is kept exactly (``cost_scaled``)."""
    if not cuts:
        return []
    u = UsageEvent
    where = (
        u.customer_id == customer_id,
        u.currency == currency,
        u.status.in_(PRICED),
        u.cost_scaled.is_not(None),
        u.timestamp >= p.start,
        u.timestamp < p.end,
    )
    if session.get_bind().dialect.name == "postgresql":
        number = func.width_bucket(u.timestamp, _bounds(cuts))
        rows = session.execute(
            select(number, u.event_name, func.sum(u.cost_scaled), func.count())
            .where(*where)
            .group_by(number, u.event_name)
        ).all()
        sums = {(n - 1, name): (int(cost), int(k)) for n, name, cost, k in rows}
    else:
        starts = [c.start for c in cuts]
        acc: dict[tuple[int, str], list[int]] = {}
        for ts, name, cost in session.execute(
            select(u.timestamp, u.event_name, u.cost_scaled).where(*where),
            execution_options={"yield_per": 5000},
        ):
            s = acc.setdefault((bisect_right(starts, ts) - 1, name), [0, 0])
            s[0] += cost
            s[1] += 1
        sums = {k: (v[0], v[1]) for k, v in acc.items()}
    found = {key: (0, cost // USAGE_SCALE, k, cost) for key, (cost, k) in sums.items()}
    return _lines(cuts, found)


# -- spend per meter, for the dashboard ------------------------------------------------------


@dataclass(frozen=True)
class MeterSpend:
    """One meter's usage in one currency over a window: the exact cost and its events."""

    currency: str
    meter: str
    events: int
    cost_scaled: int  # 10**-12 minor units, exact

    @property
    def cost(self) -> int:
        """The whole minor units of the cost (what ``debits`` says in the meter report)."""
        return self.cost_scaled // USAGE_SCALE


def spend_by_meter(
    session: Session, customer_id: str, *, days: int = 30, now: datetime | None = None
) -> list[MeterSpend]:
    """The customer's usage cost per meter (event name) over the last ``days`` UTC days,
    today included (the window of the dashboard's other 30-day panels): the ``group_by=meter``
    report of each wallet over that period (``GET .../wallets/analytics``), its buckets added
    up. Per currency, costliest first; meters without priced events are absent."""
    now = now or utcnow()
    start = datetime.combine(now.date() - timedelta(days=days - 1), time.min, UTC)
    p = period(start, now)
    currencies = session.scalars(
        select(Wallet.currency).where(Wallet.customer_id == customer_id).order_by(Wallet.currency)
    ).all()
    out: list[MeterSpend] = []
    for currency in currencies:
        totals: dict[str, list[int]] = {}
        # Monthly buckets: a 30-day window is one or two of them, added up here.
        for line in analytics(session, customer_id, currency, p, "month", "meter").lines:
            sums = totals.setdefault(line.group or "", [0, 0])
            sums[0] += line.count
            sums[1] += line.cost_scaled or 0
        spent = [MeterSpend(currency, m, k, cost) for m, (k, cost) in totals.items()]
        out.extend(sorted(spent, key=lambda s: (-s.cost_scaled, s.meter)))
    return out
