"""What the operator dashboard and the customer portal read from the ledger, and nothing else.

Nothing here writes. Each list is keyset-paged (``seq`` for entries, ``(created_at,
customer_id)`` for customers), so a page deep in a 100,000-entry ledger costs what the first
page costs: an index range, never an ``OFFSET`` that reads and throws away every row before it.

Holds (``held_balances``, ``holds_of``, ``holds_expiring_soon``) are read here. The
spend-by-meter panel is not: it is the analytics report grouped by meter
(``worker.reports.analytics.spend_by_meter``), and the ledger imports no domain built on it
(the import contracts in ``pyproject.toml``).
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, Date, and_, cast, func, literal, or_, select, union_all
from sqlalchemy.orm import Session

from worker.errors import ValidationFailed
from worker.infra.db import settings_of
from worker.ledger.customers import get_customer
from worker.ledger.lot_views import SPENDING_ORDER
from worker.ledger.validation import validate_currency
from worker.models import (
    LEDGER_EVENT_TYPES,
    CreditLot,
    Customer,
    LedgerEntry,
    Wallet,
    WalletHold,
    utcnow,
)

PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
# The balance chart plots a wallet's last entries (each entry's after_balance): a bounded,
# index-ordered read however long the ledger is.
CHART_POINTS = 500


def _day(session: Session, column: Any) -> Any:
    """The UTC calendar day of a timestamp column, on either backend."""
    if session.get_bind().dialect.name == "postgresql":
        return cast(func.timezone("UTC", column), Date)
    return func.date(column)  # SQLite stores UTC text


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


def _page_size(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PAGE_SIZE:
        raise ValidationFailed("page_size", f"must be between 1 and {MAX_PAGE_SIZE}")
    return value


# -- the overview ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Liability:
    """What the service owes its customers in one currency: the sum of every wallet."""

    currency: str
    total: int
    wallets: int
    funded: int


def liabilities(session: Session) -> list[Liability]:
    rows = session.execute(
        select(
            Wallet.currency,
            cast(func.coalesce(func.sum(Wallet.balance), 0), BigInteger),
            func.count(),
            func.count().filter(Wallet.balance > 0),
        )
        .group_by(Wallet.currency)
        .order_by(Wallet.currency)
    ).all()
    return [Liability(c, int(t), int(n), int(f)) for c, t, n, f in rows]


@dataclass(frozen=True)
class DayFlow:
    day: date
    currency: str
    credits: int
    debits: int


# Per-day totals of days that are over are remembered per process: entries are append-only
# and stamped when they are posted, so a day's totals stop changing once the transactions
# that stamped its last entries have committed. A day counts as over an hour after its end
# (far longer than any posting transaction); the hour after midnight re-reads yesterday. So
# a chart costs a read of today's entries, and the full window once a day per process.
CLOSED_AFTER = timedelta(hours=1)
_CLOSED_MAX = 512  # (database, customer, window) entries; bounded: customers are many
_closed: OrderedDict[tuple[Any, ...], list[DayFlow]] = OrderedDict()
_closed_lock = threading.Lock()


def _window(days: int, now: datetime) -> tuple[datetime, datetime]:
    """The window's first instant, and the first instant of the days still open."""
    since = datetime.combine(now.date() - timedelta(days=days - 1), datetime.min.time(), UTC)
    still_open = datetime.combine((now - CLOSED_AFTER).date(), datetime.min.time(), UTC)
    return since, max(since, still_open)


def _day_totals(
    session: Session,
    since: datetime,
    until: datetime | None,
    *,
    customer_id: str | None,
    spending: bool,
) -> list[DayFlow]:
    t = LedgerEntry
    day = _day(session, t.created_at).label("day")
    if spending:  # debits only, expirations excluded: credit that lapsed was not spent
        credits: Any = literal(0)
        debits = func.sum(t.amount)
        query = select(day, t.currency, credits, debits).where(
            ~t.is_credit, t.event_type != "expiration"
        )
    else:
        credits = func.coalesce(func.sum(t.amount).filter(t.is_credit), 0)
        debits = func.coalesce(func.sum(t.amount).filter(~t.is_credit), 0)
        query = select(day, t.currency, credits, debits)
    query = query.where(t.created_at >= since)
    if until is not None:
        query = query.where(t.created_at < until)
    if customer_id is not None:
        query = query.where(t.customer_id == customer_id)
    rows = session.execute(query.group_by(day, t.currency)).all()
    return [DayFlow(_as_date(d), c, int(cr), int(db)) for d, c, cr, db in rows]


def _flows(
    session: Session, days: int, now: datetime, *, customer_id: str | None, spending: bool
) -> list[DayFlow]:
    since, still_open = _window(days, now)
    key = (settings_of(session).database_url, customer_id, spending, since, still_open)
    with _closed_lock:
        closed = _closed.get(key)
        if closed is not None:
            _closed.move_to_end(key)
    if closed is None:
        closed = (
            _day_totals(session, since, still_open, customer_id=customer_id, spending=spending)
            if still_open > since
            else []
        )
        with _closed_lock:
            _closed[key] = closed
            while len(_closed) > _CLOSED_MAX:
                _closed.popitem(last=False)
    live = _day_totals(session, still_open, None, customer_id=customer_id, spending=spending)
    return sorted(closed + live, key=lambda f: (f.day, f.currency))


def forget_closed_days() -> None:
    """Drop the remembered totals (tests that empty a database under the same URL)."""
    with _closed_lock:
        _closed.clear()


def daily_flows(
    session: Session,
    *,
    days: int = 30,
    customer_id: str | None = None,
    now: datetime | None = None,
) -> list[DayFlow]:
    """Credits and debits per UTC day and currency over the last ``days`` days (today
    included), oldest first; days without entries are absent. ``customer_id`` narrows it to
    one customer. Days that are over come from the per-process memory above; the rest is
    read over ``ix_ledger_entries_created``."""
    return _flows(session, days, now or utcnow(), customer_id=customer_id, spending=False)


@dataclass(frozen=True)
class LowWallet:
    customer_id: str
    name: str
    email: str
    currency: str
    balance: int


def low_wallets(session: Session, *, limit: int = 20) -> list[LowWallet]:
    """Wallets at or below their low-balance threshold, lowest first: the ones the
    low-balance check has put in the ``low`` state (a wallet that never reached its threshold
    is ``unarmed``, not low; worker.notify.lowbalance)."""
    rows = session.execute(
        select(Customer.customer_id, Customer.name, Customer.email, Wallet.currency, Wallet.balance)
        .join(Customer, Customer.customer_id == Wallet.customer_id)
        .where(Wallet.low_state == "low")
        .order_by(Wallet.currency, Wallet.balance, Wallet.customer_id)
        .limit(limit)
    ).all()
    return [LowWallet(*row) for row in rows]


@dataclass(frozen=True)
class ExpiringLot:
    lot_id: str
    customer_id: str
    currency: str
    remaining: int
    category: str
    expires_at: datetime


@dataclass(frozen=True)
class Expiring:
    """Live credit that expires within the window: totals per currency, the soonest lots."""

    totals: dict[str, int]
    lots: list[ExpiringLot]


def expiring_credit(
    session: Session, *, days: int = 7, limit: int = 20, now: datetime | None = None
) -> Expiring:
    """Live credit expiring within ``days`` (over ``ix_credit_lots_expiring``)."""
    now = now or utcnow()
    t = CreditLot
    window = and_(
        t.remaining > 0,
        t.expires_at.is_not(None),
        t.expires_at > now,
        t.expires_at <= now + timedelta(days=days),
    )
    totals = session.execute(
        select(t.currency, cast(func.sum(t.remaining), BigInteger))
        .where(window)
        .group_by(t.currency)
        .order_by(t.currency)
    ).all()
    lots = session.execute(
        select(t.id, t.customer_id, t.currency, t.remaining, t.category, t.expires_at)
        .where(window)
        .order_by(t.expires_at, t.seq)
        .limit(limit)
    ).all()
    return Expiring({c: int(a) for c, a in totals}, [ExpiringLot(*row) for row in lots])


# -- customers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CustomerPage:
    customers: list[Customer]
    next_cursor: str | None


def _escape_like(text: str) -> str:
    return re.sub(r"([\\%_])", r"\\\1", text)


def _customer_cursor(customer: Customer) -> str:
    return f"{customer.created_at.astimezone(UTC).isoformat()}|{customer.customer_id}"


def _parse_customer_cursor(cursor: str) -> tuple[datetime, str]:
    at, bar, customer_id = cursor.partition("|")
    try:
        when = datetime.fromisoformat(at)
    except ValueError:
        when = None
    if not bar or not customer_id or when is None or when.tzinfo is None:
        raise ValidationFailed("after", "not a cursor this page gave out")
    return when, customer_id


def search_customers(
    session: Session,
    query: str | None = None,
    *,
    after: str | None = None,
    page_size: int = PAGE_SIZE,
) -> CustomerPage:
    """Customers newest first whose email or name contains ``query`` (case-insensitively),
    a page at a time: ``after`` is the previous page's ``next_cursor``."""
    page_size = _page_size(page_size)
    q = select(Customer).order_by(Customer.created_at.desc(), Customer.customer_id.desc())
    if query and query.strip():
        pattern = "%" + _escape_like(query.strip().lower()) + "%"
        q = q.where(
            or_(
                Customer.email_normalized.like(pattern, escape="\\"),
                Customer.name.ilike(pattern, escape="\\"),
            )
        )
    if after:
        at, customer_id = _parse_customer_cursor(after)
        q = q.where(
            or_(
                Customer.created_at < at,
                and_(Customer.created_at == at, Customer.customer_id < customer_id),
            )
        )
    found = list(session.scalars(q.limit(page_size + 1)))
    more = len(found) > page_size
    found = found[:page_size]
    return CustomerPage(found, _customer_cursor(found[-1]) if more else None)


# -- one customer --------------------------------------------------------------------------


def live_lots(session: Session, customer_id: str, *, limit: int = 50) -> list[CreditLot]:
    """The customer's lots that hold something, in the order debits spend them (soonest
    expiry first), over the spending index. Lots past their expiry that the expiry task has
    not reached yet are included: the page shows them as expired."""
    return list(
        session.scalars(
            select(CreditLot)
            .where(CreditLot.customer_id == customer_id, CreditLot.remaining > 0)
            .order_by(CreditLot.currency, *SPENDING_ORDER)
            .limit(limit)
        )
    )


@dataclass(frozen=True)
class BalancePoint:
    at: datetime
    balance: int


def balance_series(
    session: Session,
    customer_id: str,
    currencies: Sequence[str],
    *,
    points: int = CHART_POINTS,
) -> dict[str, list[BalancePoint]]:
    """Per currency, the wallet's balance after each of its last ``points`` entries, oldest
    first: one statement, a backwards range of ``ix_ledger_entries_wallet_seq`` per wallet.
    A wallet without entries is absent."""
    t = LedgerEntry
    parts = [
        select(t.currency, t.seq, t.created_at, t.after_balance)
        .where(t.customer_id == customer_id, t.currency == currency)
        .order_by(t.seq.desc())
        .limit(points)
        .subquery()
        for currency in currencies
    ]
    if not parts:
        return {}
    query = union_all(*(select(part) for part in parts))
    found: dict[str, list[tuple[int, BalancePoint]]] = {}
    for currency, seq, at, balance in session.execute(query).all():
        found.setdefault(currency, []).append((seq, BalancePoint(at, int(balance))))
    # A union keeps no order of its own: sort each wallet's points by entry sequence.
    return {c: [p for _, p in sorted(rows, key=lambda r: r[0])] for c, rows in found.items()}


@dataclass(frozen=True)
class LedgerFilter:
    """The ledger's filters; every one optional. ``until`` is exclusive."""

    currency: str | None = None
    event_type: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def checked(self, session: Session) -> LedgerFilter:
        currency = validate_currency(session, self.currency) if self.currency else None
        if self.event_type is not None and self.event_type not in LEDGER_EVENT_TYPES:
            raise ValidationFailed("event_type", f"must be one of {', '.join(LEDGER_EVENT_TYPES)}")
        if self.since and self.until and self.since >= self.until:
            raise ValidationFailed("until", "must be after the start date")
        return LedgerFilter(currency, self.event_type, self.since, self.until)

    def apply(self, query: Any) -> Any:
        t = LedgerEntry
        if self.currency:
            query = query.where(t.currency == self.currency)
        if self.event_type:
            query = query.where(t.event_type == self.event_type)
        if self.since:
            query = query.where(t.created_at >= self.since)
        if self.until:
            query = query.where(t.created_at < self.until)
        return query


@dataclass(frozen=True)
class LedgerPage:
    entries: list[LedgerEntry]
    next_before: int | None  # pass as ``before`` for the next (older) page


def ledger_page(
    session: Session,
    customer_id: str,
    filters: LedgerFilter = LedgerFilter(),
    *,
    before: int | None = None,
    page_size: int = PAGE_SIZE,
) -> LedgerPage:
    """The customer's entries newest first, filtered, older than ``before`` (an entry's seq)."""
    page_size = _page_size(page_size)
    filters = filters.checked(session)
    t = LedgerEntry
    query = filters.apply(select(t).where(t.customer_id == customer_id))
    if before is not None:
        query = query.where(t.seq < before)
    found = list(session.scalars(query.order_by(t.seq.desc()).limit(page_size + 1)))
    if not found:
        get_customer(session, customer_id)  # an unknown customer is CustomerNotFound
    more = len(found) > page_size
    found = found[:page_size]
    return LedgerPage(found, found[-1].seq if more else None)


def iter_ledger(
    session: Session,
    customer_id: str,
    filters: LedgerFilter = LedgerFilter(),
    *,
    batch: int = 2000,
) -> Iterator[Any]:
    """Every entry of the customer matching ``filters``, newest first, as rows of the columns
    ``csv_row`` reads (no ORM objects: an export of 100,000 entries builds none), read
    ``batch`` at a time by keyset, so memory stays flat however long the ledger is."""
    get_customer(session, customer_id)
    filters = filters.checked(session)
    t = LedgerEntry
    columns = (
        t.seq,
        t.id,
        t.created_at,
        t.currency,
        t.is_credit,
        t.event_type,
        t.amount,
        t.before_balance,
        t.after_balance,
        t.reason,
        t.reference_object_id,
        t.idempotency_key,
        t.actor,
    )
    before: int | None = None
    while True:
        query = filters.apply(select(*columns).where(t.customer_id == customer_id))
        if before is not None:
            query = query.where(t.seq < before)
        rows = session.execute(query.order_by(t.seq.desc()).limit(batch)).all()
        yield from rows
        if len(rows) < batch:
            return
        before = rows[-1].seq


CSV_COLUMNS = (
    "id",
    "created_at",
    "currency",
    "entry_type",
    "event_type",
    "amount",
    "before_balance",
    "after_balance",
    "reason",
    "reference_object_id",
    "idempotency_key",
    "actor",
)


def csv_row(entry: Any) -> list[str | int]:
    """One entry as a row of ``CSV_COLUMNS`` (amounts as integers in minor units)."""
    return [
        entry.id,
        entry.created_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        entry.currency,
        "credit" if entry.is_credit else "debit",
        entry.event_type,
        entry.amount,
        entry.before_balance,
        entry.after_balance,
        entry.reason or "",
        entry.reference_object_id or "",
        entry.idempotency_key or "",
        entry.actor,
    ]


def daily_spending(
    session: Session, customer_id: str, *, days: int = 30, now: datetime | None = None
) -> list[DayFlow]:
    """The customer's debits per day and currency (expirations excluded: credit that lapsed
    was not spent), for the portal; ``credits`` is always 0 here."""
    return _flows(session, days, now or utcnow(), customer_id=customer_id, spending=True)


# -- holds ------------------------------------------------------------------------------------
# A hold is not a ledger entry: ``wallets.held`` (kept by the trigger on ``wallet_holds``) is
# what active holds reserve, and available = balance - held, as debits see it.

# How many holds a page lists (a customer's holds are work in flight: a handful at a time).
HOLDS_SHOWN = 50


@dataclass(frozen=True)
class Held:
    held: int
    available: int


def held_balances(session: Session, customer_id: str) -> dict[str, Held]:
    """Per currency of the customer's wallets: what active holds reserve and what is
    available, ``max(balance - held, 0)`` (the holds may exceed a balance that expiring
    credit left: worker.ledger.wallets.LockedWallet.available)."""
    rows = session.execute(
        select(Wallet.currency, Wallet.balance, Wallet.held).where(
            Wallet.customer_id == customer_id
        )
    ).all()
    return {c: Held(int(h or 0), max(int(b) - int(h or 0), 0)) for c, b, h in rows}


def holds_of(session: Session, customer_id: str, *, limit: int = HOLDS_SHOWN) -> list[WalletHold]:
    """The customer's active holds, soonest to expire first; dispute holds (which never
    expire, ``expires_at`` NULL) last. A hold past its expiry that the expiry task has not
    reached yet is included (it still counts in ``wallets.held``); the page says so."""
    t = WalletHold
    return list(
        session.scalars(
            select(t)
            .where(t.customer_id == customer_id, t.status == "active")
            # "IS NULL" first as a key: false sorts before true on both backends.
            .order_by(t.expires_at.is_(None), t.expires_at, t.created_at, t.hold_id)
            .limit(limit)
        )
    )


def holds_expiring_soon(
    session: Session, *, hours: int = 24, limit: int = 20, now: datetime | None = None
) -> list[WalletHold]:
    """Active holds (of every customer) whose ``expires_at`` falls within the next ``hours``,
    soonest first, over ``ix_wallet_holds_expiring``. Holds already past their expiry are
    left out: they reserve nothing a capture could take."""
    now = now or utcnow()
    t = WalletHold
    return list(
        session.scalars(
            select(t)
            .where(
                t.status == "active",
                t.expires_at.is_not(None),
                t.expires_at > now,
                t.expires_at <= now + timedelta(hours=hours),
            )
            .order_by(t.expires_at, t.customer_id, t.hold_id)
            .limit(limit)
        )
    )
