"""A wallet's balance at a moment, read from ``after_balance`` (never a replay), and where a
period starts and ends in the wallet's chain (see the package's note on the ledger's order).

The last entry at or before a moment is the one of greatest ``seq`` among those created by
then: every entry after it in the chain was created after the moment (``point_seq`` says how
PostgreSQL finds it without reading the whole wallet).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from worker.ledger.customers import get_customer
from worker.ledger.validation import validate_currency
from worker.models import LedgerEntry


@dataclass(frozen=True)
class ChainPoint:
    """A point of a wallet's chain: after entry ``seq`` (0: before the first entry)."""

    seq: int
    balance: int
    entry_id: str | None = None
    created_at: datetime | None = None


START = ChainPoint(seq=0, balance=0)


def point_at(
    session: Session, customer_id: str, currency: str, moment: datetime, *, inclusive: bool
) -> ChainPoint:
    """The chain right after the last entry created at (``inclusive``) or before ``moment``."""
    e = LedgerEntry
    if session.get_bind().dialect.name == "postgresql":
        seq = session.execute(
            text(f"SELECT {point_seq('CAST(:c AS text)', 'CAST(:cur AS text)', inclusive)}"),
            {"c": customer_id, "cur": currency, "m": moment},
        ).scalar()
        if seq is None:
            return START
        row = session.execute(
            select(e.seq, e.after_balance, e.id, e.created_at).where(e.seq == seq)
        ).one()
        return ChainPoint(row.seq, row.after_balance, row.id, row.created_at)
    created = e.created_at <= moment if inclusive else e.created_at < moment
    row = session.execute(
        select(e.seq, e.after_balance, e.id, e.created_at)
        .where(e.customer_id == customer_id, e.currency == currency, created)
        .order_by(e.seq.desc())
        .limit(1)
    ).first()
    if row is None:
        return START
    return ChainPoint(row.seq, row.after_balance, row.id, row.created_at)


# How many of a wallet's newest entries the walk back its chain reads before it gives up and
# asks the created_at index instead (most moments asked about are recent).
RECENT = 1000


def point_seq(customer: str, currency: str, inclusive: bool) -> str:
    """PostgreSQL: the ``seq`` of the wallet's last entry created at/before ``:m`` (NULL if
    none), for SQL expressions ``customer`` and ``currency`` (a wallet row's columns, or
    parameters). Exact, and cheap on both sides of a big wallet's history:

    1. walk back the newest ``RECENT`` entries of the chain (the covering ``seq`` index): the
       first created by then is the answer, since every later one was created after;
    2. only when all of those are later, the greatest ``seq`` among the entries created by
       then, read from the ``created_at`` index (``seq + 0``: not PostgreSQL's max-by-index
       rewrite, which is step 1 without its bound).

    ``coalesce`` evaluates the second only when the first is NULL.
    """
    op = "<=" if inclusive else "<"
    # Only this package's constants are put in (column names, an operator); values are bound.
    return f"""coalesce(
        (SELECT r.seq FROM (SELECT seq, created_at FROM ledger_entries
                            WHERE customer_id = {customer} AND currency = {currency}
                            ORDER BY seq DESC LIMIT {RECENT}) AS r
         WHERE r.created_at {op} :m ORDER BY r.seq DESC LIMIT 1),
        (SELECT max(seq + 0) FROM ledger_entries
         WHERE customer_id = {customer} AND currency = {currency} AND created_at {op} :m))"""  # noqa: S608


def checked_wallet(session: Session, customer_id: str, currency: str) -> str:
    """The customer exists (404) and ``currency`` is a wallet currency (422); the currency."""
    get_customer(session, customer_id)
    return validate_currency(session, currency)


def balance_at(session: Session, customer_id: str, currency: str, moment: datetime) -> ChainPoint:
    """``GET .../wallets/balance?at=``: the balance right after the last entry at or before
    ``moment`` (0 before the wallet's first entry)."""
    currency = checked_wallet(session, customer_id, currency)
    return point_at(session, customer_id, currency, moment, inclusive=True)


@dataclass(frozen=True)
class Span:
    """A period of one wallet's chain: the entries with ``opening.seq < seq <= closing.seq``."""

    currency: str
    opening: ChainPoint
    closing: ChainPoint


def span(
    session: Session, customer_id: str, currency: str, start: datetime | None, end: datetime | None
) -> Span:
    """The part of the wallet's chain from ``start`` (the balance just before it) to ``end``
    (the balance just before it); None: the chain's beginning, or its newest entry now."""
    opening = (
        START if start is None else point_at(session, customer_id, currency, start, inclusive=False)
    )
    if end is None:
        closing = _newest(session, customer_id, currency)
    else:
        closing = point_at(session, customer_id, currency, end, inclusive=False)
    # An entry created before ``start`` but after the opening in the chain cannot exist (the
    # opening is the last one created before it); so closing.seq >= opening.seq.
    return Span(currency, opening, closing if closing.seq >= opening.seq else opening)


def _newest(session: Session, customer_id: str, currency: str) -> ChainPoint:
    e = LedgerEntry
    row = session.execute(
        select(e.seq, e.after_balance, e.id, e.created_at)
        .where(e.customer_id == customer_id, e.currency == currency)
        .order_by(e.seq.desc())
        .limit(1)
    ).first()
    return START if row is None else ChainPoint(row.seq, row.after_balance, row.id, row.created_at)
