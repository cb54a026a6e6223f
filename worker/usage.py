"""Usage events: ingest, exact accrual, batched exactly-once debits, settlement of unbilled usage.

Lifecycle of an event (``usage_events.status``):

- ``pending``   stored and priced (``currency``, ``cost_scaled``), not yet billed;
- ``processed`` its cost is in the wallet: debited, or accrued in ``pending_usage_scaled``;
- ``unbilled``  billed while the wallet could not pay it all: ``unbilled_amount`` whole minor
                units are owed, and ``settle`` debits them oldest first after a top-up;
- ``unpriced``  no price for its ``event_name`` (kept, never billed);
- ``invalid``   its quantity cannot be priced (``error`` says why; kept, never billed).

Accrual rule, per wallet: ``pending_usage_scaled + sum(cost_scaled)`` of a batch is split into
whole minor units (debited as ONE ``usage`` ledger entry) and a remainder below one minor unit
(kept in ``pending_usage_scaled``). Nothing is rounded, so for any set of events and any
batching: debited + unbilled + remainder == the exact sum of their costs.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, select, text, tuple_, update
from sqlalchemy.orm import Session

from worker import ledger, notify
from worker.db import settings_of
from worker.errors import NotFound, ValidationFailed
from worker.models import Customer, UsageEvent, Wallet, utcnow
from worker.pricing import InvalidQuantity, Pricing
from worker.schemas import USAGE_SCALE
from worker.sql import insert_ignore

MAX_EVENTS_PER_REQUEST = 1000
# Dodo's window: events older than an hour or more than five minutes ahead are refused.
MAX_AGE = timedelta(hours=1)
MAX_AHEAD = timedelta(minutes=5)
# Events one billing transaction takes. Larger batches mean fewer ledger entries (one per
# wallet per batch) and fewer commits; the transaction stays well under a second.
BATCH_SIZE = 5000


class EventsRejected(ValidationFailed):
    """Some events of an ingest request are invalid; nothing from the request was stored."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        first = errors[0]
        super().__init__(
            first["field"],
            f"{first['message']} ({len(errors)} invalid event(s); nothing was stored)",
            errors=errors,
        )


@dataclass(frozen=True)
class NewEvent:
    event_id: str
    customer_id: str
    event_name: str
    timestamp: datetime | None = None
    metadata: dict[str, Any] | None = None


# -- ingest --------------------------------------------------------------------------------


def ingest(
    session: Session,
    events: Sequence[NewEvent],
    *,
    pricing: Pricing,
    now: datetime | None = None,
) -> int:
    """Validate, price and store ``events``; returns how many were new. Never commits.

    All or nothing: any invalid event raises ``EventsRejected`` listing every bad event by
    index and field, before anything is written. An ``event_id`` stored before is skipped
    (``ON CONFLICT DO NOTHING``), so concurrent or retried requests store each event once.
    """
    now = now or utcnow()
    if len(events) > MAX_EVENTS_PER_REQUEST:
        raise ValidationFailed("events", f"at most {MAX_EVENTS_PER_REQUEST} events per request")
    errors: list[dict[str, Any]] = []

    def bad(index: int, name: str, message: str) -> None:
        errors.append({"index": index, "field": f"events.{index}.{name}", "message": message})

    seen: dict[str, int] = {}
    for index, event in enumerate(events):
        if event.event_id in seen:
            bad(index, "event_id", f"duplicates events.{seen[event.event_id]}.event_id")
        seen.setdefault(event.event_id, index)
        ts = event.timestamp
        if ts is not None:
            if ts.tzinfo is None:
                raise ValueError("timestamps must be timezone-aware")  # the HTTP layer adds UTC
            if ts < now - MAX_AGE:
                bad(index, "timestamp", "older than 1 hour")
            elif ts > now + MAX_AHEAD:
                bad(index, "timestamp", "more than 5 minutes in the future")
    if not events:
        return 0
    postgres = session.get_bind().dialect.name == "postgresql"
    # PostgreSQL checks the customers inside its one INSERT (no separate round trip) when
    # nothing else is wrong; otherwise every unknown customer is listed with the other errors.
    if errors or not postgres:
        known = _known_customers(session, {e.customer_id for e in events})
        _reject_unknown(events, known, errors)
    rows = [_row(event, pricing, now) for event in events]
    # ONE multi-row INSERT for the whole request: one round trip, one statement to plan.
    if postgres:
        inserted, missing = _insert_pg(session, rows, now)
        if missing:
            _reject_unknown(events, {e.customer_id for e in events} - set(missing), errors)
        return inserted
    table = UsageEvent.__table__
    statement = insert_ignore(session, table, ["event_id"]).returning(table.c.seq)
    return len(session.execute(statement.values(rows)).all())


def _reject_unknown(
    events: Sequence[NewEvent], known: set[str], errors: list[dict[str, Any]]
) -> None:
    """Raise ``EventsRejected`` for ``errors`` plus every event whose customer is unknown."""
    for index, event in enumerate(events):
        if event.customer_id not in known:
            errors.append(
                {
                    "index": index,
                    "field": f"events.{index}.customer_id",
                    "message": f"customer {event.customer_id} not found",
                }
            )
    if errors:
        errors.sort(key=lambda e: e["index"])
        raise EventsRejected(errors)


# The rows travel as ONE JSON document (json_to_recordset): the statement text never changes
# (PostgreSQL and SQLAlchemy both cache it), where a VALUES list of 1,000 rows x 11 columns
# would be compiled afresh for every request; and one C-encoded JSON string is far cheaper to
# send than eleven arrays, whose elements psycopg quotes one by one in Python (profiling showed
# that array dumping was the largest CPU cost of an ingest request).
# The customers are checked in the same statement: when any is unknown, ``missing`` lists
# them and the INSERT writes nothing (every part of a statement sees the same snapshot). The
# foreign key still stands behind it. Rows keep the request's order (``n``), so seq follows it.
_INSERT_PG = text("""
    WITH v AS (
        SELECT * FROM json_to_recordset(CAST(:rows AS json)) AS v(
            n int, event_id text, customer_id text, event_name text, "timestamp" timestamptz,
            metadata json, status text, currency text, cost_scaled bigint, error text,
            processed boolean)
    ), missing AS (
        SELECT DISTINCT customer_id FROM v
        WHERE NOT EXISTS (SELECT 1 FROM customers c WHERE c.customer_id = v.customer_id)
    ), ins AS (
        INSERT INTO usage_events (event_id, customer_id, event_name, "timestamp", metadata,
            status, currency, cost_scaled, error, received_at, processed_at, unbilled_amount)
        SELECT event_id, customer_id, event_name, COALESCE("timestamp", :now), metadata,
            status, currency, cost_scaled, error, :now, CASE WHEN processed THEN :now END, 0
        FROM v WHERE NOT EXISTS (SELECT 1 FROM missing) ORDER BY n
        ON CONFLICT (event_id) DO NOTHING RETURNING 1
    )
    SELECT (SELECT count(*) FROM ins), ARRAY(SELECT customer_id FROM missing)
""")


def _insert_pg(
    session: Session, rows: list[dict[str, Any]], now: datetime
) -> tuple[int, list[str]]:
    """Insert ``rows``; returns (how many were new, unknown customer ids: nothing inserted)."""
    document = json.dumps(
        [
            {
                "n": n,
                "event_id": r["event_id"],
                "customer_id": r["customer_id"],
                "event_name": r["event_name"],
                "timestamp": None if r["timestamp"] is now else r["timestamp"].isoformat(),
                "metadata": r["metadata"],
                "status": r["status"],
                "currency": r["currency"],
                "cost_scaled": r["cost_scaled"],
                "error": r["error"],
                "processed": r["processed_at"] is not None,
            }
            for n, r in enumerate(rows)
        ]
    )
    inserted, missing = session.execute(_INSERT_PG, {"rows": document, "now": now}).one()
    return inserted, missing


def _known_customers(session: Session, ids: set[str]) -> set[str]:
    if not ids:
        return set()
    return set(session.scalars(select(Customer.customer_id).where(Customer.customer_id.in_(ids))))


def _row(event: NewEvent, pricing: Pricing, now: datetime) -> dict[str, Any]:
    """The stored row, priced now: the price in force when the event arrived is its price."""
    row: dict[str, Any] = {
        "event_id": event.event_id,
        "customer_id": event.customer_id,
        "event_name": event.event_name,
        "timestamp": event.timestamp or now,
        "metadata": event.metadata,
        "status": "pending",
        "currency": None,
        "cost_scaled": None,
        "unbilled_amount": 0,
        "ledger_entry_id": None,
        "error": None,
        "received_at": now,
        "processed_at": None,
    }
    price = pricing.get(event.event_name)
    if price is None:
        row.update(status="unpriced", processed_at=now)
        return row
    row["currency"] = price.currency
    try:
        row["cost_scaled"] = price.cost_scaled(event.metadata)
    except InvalidQuantity as exc:
        row.update(status="invalid", error=str(exc), processed_at=now)
    return row


# -- billing -------------------------------------------------------------------------------


@dataclass
class BatchResult:
    events: int = 0
    wallets: int = 0
    debited: int = 0  # whole minor units debited by this batch
    unbilled: int = 0  # whole minor units the wallets could not pay
    entry_ids: list[str] = field(default_factory=list)


def bill_batch(session: Session, limit: int = BATCH_SIZE) -> BatchResult:
    """Bill up to ``limit`` pending events, oldest first, in the caller's transaction.

    The events are locked with ``FOR UPDATE SKIP LOCKED`` (PostgreSQL), so concurrent
    workers take disjoint batches and a redelivered task finds its events already processed.
    The events' status, the ledger entries and the wallets' remainders commit together, so a
    batch applies entirely or not at all. Never commits.
    """
    pending = session.execute(
        select(
            UsageEvent.seq,
            UsageEvent.customer_id,
            UsageEvent.currency,
            UsageEvent.cost_scaled,
            UsageEvent.event_name,
        )
        .where(UsageEvent.status == "pending")
        .order_by(UsageEvent.seq)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    result = BatchResult(events=len(pending))
    if not pending:
        return result
    groups: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for row in pending:
        groups[(row.customer_id, row.currency)].append(row)
    keys = sorted(groups)
    wallets = ledger.lock_wallets(session, keys)
    now = utcnow()
    accrued: dict[tuple[str, str], tuple[int, int]] = {}
    legs: list[ledger.Leg] = []
    for key in keys:
        rows = groups[key]
        customer_id, currency = key
        total = wallets[key].pending_usage_scaled + sum(r.cost_scaled for r in rows)
        whole, remainder = divmod(total, USAGE_SCALE)
        accrued[key] = (whole, remainder)
        if whole:
            names = sorted({r.event_name for r in rows})
            legs.append(
                ledger.Leg(
                    customer_id=customer_id,
                    currency=currency,
                    amount=whole,
                    is_credit=False,
                    event_type="usage",
                    reason=f"usage: {len(rows)} event(s) ({', '.join(names)})"[:1000],
                    # Derived from the batch's events, not from the delivery: the first seq of a
                    # wallet's events belongs to exactly one batch, so applying the same events
                    # twice would collide here even if the status check were bypassed.
                    key=ledger.system_key("usage", f"{rows[0].seq}-{rows[-1].seq}", currency),
                    # The usage already happened: take what the wallet holds, owe the rest.
                    on_short=ledger.OnShort.TAKE,
                )
            )
    # All wallets of the batch in one posting (a few statements, not a few per wallet). A key
    # already used answers its own wallet (those events were billed by that entry) and never
    # stalls the others.
    results = ledger.post(session, legs, duplicates="skip", locked=wallets)
    posted = {
        leg.wallet: result.entry
        for leg, result in zip(legs, results, strict=True)
        if result is not None
    }
    # One array per column of the events' and wallets' updates (see _MARK_PG).
    seqs: list[int] = []
    statuses: list[str] = []
    unbilled: list[int] = []
    event_entries: list[str | None] = []
    remainders: list[int] = []
    for key in keys:
        rows = groups[key]
        customer_id, currency = key
        whole, remainder = accrued[key]
        remainders.append(remainder)
        entry = posted.get(key)
        entry_id = entry.id if entry else None
        applied = entry.amount if entry else 0
        if entry_id:
            result.entry_ids.append(entry_id)
        shortfall = whole - applied
        result.debited += applied
        result.unbilled += shortfall
        seqs.extend(r.seq for r in rows)
        event_entries.extend([entry_id] * len(rows))
        if not shortfall:
            statuses.extend(["processed"] * len(rows))
            unbilled.extend([0] * len(rows))
            continue
        # Usage already happened: it is recorded as owed, and the merchant is told.
        notify.enqueue_event(
            session,
            "usage.unbilled",
            {
                "customer_id": customer_id,
                "currency": currency,
                "balance": entry.after_balance if entry else 0,
                "unbilled_amount": shortfall,
                "event_count": len(rows),
                "ledger_entry_id": entry_id,
            },
        )
        owed = _allocate_shortfall(rows, shortfall)
        for row in rows:
            statuses.append("unbilled" if owed.get(row.seq) else "processed")
            unbilled.append(owed.get(row.seq, 0))
    # The wallets are locked (above), so writing the computed remainder cannot lose a
    # concurrent accrual: any other batch touching these wallets waits for our commit.
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            _MARK_PG,
            {
                "now": now,
                "customers": [k[0] for k in keys],
                "currencies": [k[1] for k in keys],
                "remainders": remainders,
                "seqs": seqs,
                "statuses": statuses,
                "unbilled": unbilled,
                "entries": event_entries,
            },
        )
    else:
        wallets_t = Wallet.__table__
        session.execute(
            update(wallets_t)
            .where(
                wallets_t.c.customer_id == bindparam("b_customer"),
                wallets_t.c.currency == bindparam("b_currency"),
            )
            .values(pending_usage_scaled=bindparam("b_remainder")),
            [
                {"b_customer": k[0], "b_currency": k[1], "b_remainder": r}
                for k, r in zip(keys, remainders, strict=True)
            ],
        )
        table = UsageEvent.__table__
        session.execute(
            update(table)
            .where(table.c.seq == bindparam("b_seq"), table.c.status == "pending")
            .values(
                status=bindparam("b_status"),
                unbilled_amount=bindparam("b_unbilled"),
                ledger_entry_id=bindparam("b_entry"),
                processed_at=now,
            ),
            [
                {"b_seq": q, "b_status": st, "b_unbilled": u, "b_entry": e}
                for q, st, u, e in zip(seqs, statuses, unbilled, event_entries, strict=True)
            ],
        )
    result.wallets = len(groups)
    return result


# The wallets' remainders and the events' outcome in ONE statement (two data-modifying CTEs on
# different tables), each table's rows as one array per column: one round trip for the batch.
_MARK_PG = text("""
    WITH r AS (
        UPDATE wallets w SET pending_usage_scaled = v.remainder
        FROM unnest(CAST(:customers AS text[]), CAST(:currencies AS text[]),
                    CAST(:remainders AS bigint[])) AS v(customer_id, currency, remainder)
        WHERE w.customer_id = v.customer_id AND w.currency = v.currency
        RETURNING 1
    )
    UPDATE usage_events u
    SET status = v.status, unbilled_amount = v.unbilled, ledger_entry_id = v.entry,
        processed_at = :now
    FROM unnest(CAST(:seqs AS bigint[]), CAST(:statuses AS text[]),
                CAST(:unbilled AS bigint[]), CAST(:entries AS text[]))
         AS v(seq, status, unbilled, entry)
    WHERE u.seq = v.seq AND u.status = 'pending'
""")


def _lock_wallets(session: Session, keys: list[tuple[str, str]]) -> dict[tuple[str, str], Wallet]:
    """Lock every wallet of ``keys`` as ORM objects, in key order (settlement's path).

    One fixed order (customer_id, currency) for every batch means two workers whose batches
    share wallets queue on each other instead of deadlocking.
    """

    def fetch() -> dict[tuple[str, str], Wallet]:
        found = session.scalars(
            select(Wallet)
            .where(tuple_(Wallet.customer_id, Wallet.currency).in_(keys))
            .order_by(Wallet.customer_id, Wallet.currency)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).all()
        return {(w.customer_id, w.currency): w for w in found}

    wallets = fetch()
    missing = [k for k in keys if k not in wallets]
    if missing:  # a currency configured after the customer was created
        for customer_id in sorted({k[0] for k in missing}):
            ledger.ensure_wallets(session, customer_id)
        wallets = fetch()
    return wallets


def _allocate_shortfall(rows: Sequence[Any], shortfall: int) -> dict[int, int]:
    """Spread unpaid whole units over the batch's events, newest first.

    Each event owes at most its cost rounded up to a whole unit, and the sum of those caps is
    always at least the whole units of the batch, so the shortfall is always fully assigned.
    The oldest events are the ones paid for.
    """
    owed: dict[int, int] = {}
    left = shortfall
    for row in reversed(rows):
        if left <= 0:
            break
        cap = -(-row.cost_scaled // USAGE_SCALE)
        take = min(cap, left)
        if take:
            owed[row.seq] = take
            left -= take
    if left:  # unreachable by the argument above; refuse rather than lose money
        raise AssertionError(f"could not assign {left} unbilled minor units")
    return owed


# -- settlement ----------------------------------------------------------------------------


@dataclass
class Settled:
    customer_id: str
    currency: str
    debited: int
    events_settled: int
    still_unbilled: int
    entry_id: str | None


def settle(session: Session, customer_id: str | None = None) -> list[Settled]:
    """Debit outstanding unbilled usage, oldest event first, as far as balances allow.

    One ``usage`` entry per wallet. Its idempotency key names the oldest outstanding event
    and what it still owes, a state that only ever moves forward, so a repeated settle of
    the same state can never debit twice. Never commits.
    """
    query = select(UsageEvent.customer_id, UsageEvent.currency).where(
        UsageEvent.status == "unbilled"
    )
    if customer_id is not None:
        ledger.get_customer(session, customer_id)
        query = query.where(UsageEvent.customer_id == customer_id)
    keys = sorted(set(session.execute(query.distinct()).tuples()))
    results = []
    for key in keys:
        results.append(_settle_wallet(session, *key))
    return results


def _settle_wallet(session: Session, customer_id: str, currency: str) -> Settled:
    wallet = _lock_wallets(session, [(customer_id, currency)])[(customer_id, currency)]
    rows = session.execute(
        select(UsageEvent.seq, UsageEvent.unbilled_amount, UsageEvent.event_name)
        .where(
            UsageEvent.customer_id == customer_id,
            UsageEvent.currency == currency,
            UsageEvent.status == "unbilled",
        )
        .order_by(UsageEvent.seq)
        .with_for_update()
    ).all()
    owed = sum(r.unbilled_amount for r in rows)
    if not rows or wallet.balance == 0 or owed == 0:
        return Settled(customer_id, currency, 0, 0, owed, None)
    posted = ledger.post_entry(
        session,
        customer_id=customer_id,
        currency=currency,
        amount=owed,
        is_credit=False,
        on_short=ledger.OnShort.TAKE,
        event_type="usage",
        reason=f"usage settlement: {len(rows)} unbilled event(s) "
        f"({', '.join(sorted({r.event_name for r in rows}))})"[:1000],
        idempotency_key=ledger.system_key(
            "usage-settle", rows[0].seq, rows[0].unbilled_amount, currency
        ),
    )
    paid = posted.entry.amount if posted else 0
    left = paid
    settled = 0
    updates = []
    for row in rows:
        if left <= 0:
            break
        take = min(row.unbilled_amount, left)
        left -= take
        remaining = row.unbilled_amount - take
        settled += remaining == 0
        updates.append(
            {
                "b_seq": row.seq,
                "b_unbilled": remaining,
                "b_status": "unbilled" if remaining else "processed",
            }
        )
    table = UsageEvent.__table__
    session.execute(
        update(table)
        .where(table.c.seq == bindparam("b_seq"))
        .values(unbilled_amount=bindparam("b_unbilled"), status=bindparam("b_status")),
        updates,
    )
    return Settled(
        customer_id, currency, paid, settled, owed - paid, posted.entry.id if posted else None
    )


# -- queries -------------------------------------------------------------------------------

STATUSES = ("pending", "processed", "unbilled", "unpriced", "invalid")


def list_events(
    session: Session,
    *,
    customer_id: str | None = None,
    event_name: str | None = None,
    status: str | None = None,
    page_number: int = 0,
    page_size: int = 10,
) -> list[UsageEvent]:
    """Stored events, newest first."""
    page_number, page_size = ledger.validate_page(page_number, page_size)
    query = select(UsageEvent)
    if customer_id:
        query = query.where(UsageEvent.customer_id == customer_id)
    if event_name:
        query = query.where(UsageEvent.event_name == event_name)
    if status:
        if status not in STATUSES:
            raise ValidationFailed("status", f"must be one of {', '.join(STATUSES)}")
        query = query.where(UsageEvent.status == status)
    query = query.order_by(UsageEvent.seq.desc()).offset(page_number * page_size).limit(page_size)
    return list(session.scalars(query))


def get_event(session: Session, event_id: str) -> UsageEvent:
    event = session.scalar(select(UsageEvent).where(UsageEvent.event_id == event_id))
    if event is None:
        raise NotFound(f"Event {event_id} not found", event_id=event_id)
    return event


def count_pending(session: Session) -> int:
    return (
        session.scalar(
            select(func.count()).select_from(UsageEvent).where(UsageEvent.status == "pending")
        )
        or 0
    )


def business_id(session: Session) -> str:
    return settings_of(session).business_id
