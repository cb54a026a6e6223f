"""A wallet's statement for ``[from, to)``: opening and closing balances (``after_balance`` of
the chain's entries either side, see ``balances``), total credits, debits and expired, and
the period's entries in the chain's order, a page at a time (keyset on ``seq``).

``opening + credits - debits = closing`` holds exactly: the totals are sums over the very
entries between the two chain points, and the posting pipeline writes each entry's
``before_balance`` as the previous one's ``after_balance`` (``billing-worker verify`` checks it).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import BigInteger, case, cast, func, select
from sqlalchemy.orm import Session

from worker.errors import ValidationFailed
from worker.models import LedgerEntry
from worker.reports.balances import Span, checked_wallet, span
from worker.reports.periods import Period

DEFAULT_PAGE = 100
MAX_PAGE = 1000


@dataclass(frozen=True)
class Totals:
    credits: int = 0
    debits: int = 0
    expired: int = 0  # the part of ``debits`` that ``expiration`` entries took
    count: int = 0


@dataclass(frozen=True)
class Statement:
    customer_id: str
    period: Period
    span: Span
    totals: Totals
    entries: list[LedgerEntry]
    next_cursor: str | None

    @property
    def opening(self) -> int:
        return self.span.opening.balance

    @property
    def closing(self) -> int:
        return self.span.closing.balance


def in_span(s: Span):  # type: ignore[no-untyped-def]
    """The condition for the span's entries (with the customer's)."""
    e = LedgerEntry
    return (e.currency == s.currency) & (e.seq > s.opening.seq) & (e.seq <= s.closing.seq)


def totals(session: Session, customer_id: str, s: Span) -> Totals:
    e = LedgerEntry
    if s.closing.seq == s.opening.seq:
        return Totals()
    row = session.execute(
        select(
            cast(func.coalesce(func.sum(case((e.is_credit, e.amount), else_=0)), 0), BigInteger),
            cast(func.coalesce(func.sum(case((e.is_credit, 0), else_=e.amount)), 0), BigInteger),
            cast(
                func.coalesce(func.sum(case((e.event_type == "expiration", e.amount), else_=0)), 0),
                BigInteger,
            ),
            func.count(),
        ).where(e.customer_id == customer_id, in_span(s))
    ).one()
    return Totals(int(row[0]), int(row[1]), int(row[2]), int(row[3]))


def parse_cursor(cursor: str | None) -> int:
    if cursor is None or cursor == "":
        return 0
    if not cursor.isascii() or not cursor.isdigit() or len(cursor) > 18:
        raise ValidationFailed("cursor", "must be a next_cursor of an earlier page")
    return int(cursor)


def statement(
    session: Session,
    customer_id: str,
    currency: str,
    p: Period,
    *,
    cursor: str | None = None,
    limit: int = DEFAULT_PAGE,
) -> Statement:
    """The statement, with up to ``limit`` of its entries after ``cursor`` (oldest first)."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValidationFailed("limit", f"must be from 1 to {MAX_PAGE}")
    after = parse_cursor(cursor)
    currency = checked_wallet(session, customer_id, currency)
    s = span(session, customer_id, currency, p.start, p.end)
    e = LedgerEntry
    # The page's seqs first, from the wallet's index alone; then their rows. Asked for whole
    # rows in seq order with a LIMIT, PostgreSQL may walk the primary key instead, past every
    # other wallet's entries (it assumes a wallet's rows are spread evenly over seq).
    seqs = list(
        session.scalars(
            select(e.seq)
            .where(e.customer_id == customer_id, in_span(s), e.seq > after)
            .order_by(e.seq)
            .limit(limit + 1)
        )
    )
    page = list(session.scalars(select(e).where(e.seq.in_(seqs)).order_by(e.seq))) if seqs else []
    more = len(page) > limit
    page = page[:limit]
    next_cursor = str(page[-1].seq) if more else None
    return Statement(customer_id, p, s, totals(session, customer_id, s), page, next_cursor)
