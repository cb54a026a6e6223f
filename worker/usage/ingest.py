"""Usage ingest: validate, price and store a request's events in one statement.

Dodo's rules: at most MAX_EVENTS_PER_REQUEST events per request, timestamps within an hour
before and five minutes after now, and one unknown customer refuses the whole request. An
``event_id`` is global: a seen one is skipped, and when it was seen for another customer the
answer lists it in ``conflicts`` (it is not this customer's event, and is not stored again).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from worker.errors import ValidationFailed
from worker.infra.sql import insert_ignore
from worker.models import Customer, UsageEvent, utcnow
from worker.usage.pricing import InvalidQuantity, Pricing

MAX_EVENTS_PER_REQUEST = 1000
# Dodo's window: events older than an hour or more than five minutes ahead are refused.
MAX_AGE = timedelta(hours=1)
MAX_AHEAD = timedelta(minutes=5)


class EventsRejected(ValidationFailed):
    """Some events of an ingest request are invalid; nothing from the request was stored."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        first = errors[0]
        super().__init__(
            first["field"],
            f"{first['message']} ({len(errors)} invalid event(s); nothing was stored)",
            errors=errors,
        )


CONFLICT_REASON = "event_id already used by another customer; this event was not stored"


@dataclass(frozen=True)
class Conflict:
    """An event skipped because its ``event_id`` is stored for another customer."""

    index: int
    event_id: str
    reason: str = CONFLICT_REASON


@dataclass(frozen=True)
class Ingested:
    """What an ingest stored: ``count`` new events; ``conflicts`` skipped for another customer."""

    count: int
    conflicts: list[Conflict]


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
) -> Ingested:
    """Validate, price and store ``events``; returns how many were new and which were skipped
    because another customer's event has their ``event_id``. Never commits.

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
        return Ingested(0, [])
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
    else:
        table = UsageEvent.__table__
        statement = insert_ignore(session, table, ["event_id"]).returning(table.c.seq)
        inserted = len(session.execute(statement.values(rows)).all())
    # Only a request with skipped events (a retry, or a clash) pays for the second look.
    conflicts = _conflicts(session, events) if inserted < len(events) else []
    return Ingested(inserted, conflicts)


def _conflicts(session: Session, events: Sequence[NewEvent]) -> list[Conflict]:
    """The events whose ``event_id`` is stored for another customer.

    A statement of its own, after the INSERT: under READ COMMITTED it sees an event a
    concurrent request committed while ours waited on it in ``ON CONFLICT``, which the
    INSERT's own snapshot would not. The other customer's id is not reported.
    """
    owners = dict(
        session.execute(
            select(UsageEvent.event_id, UsageEvent.customer_id).where(
                UsageEvent.event_id.in_({e.event_id for e in events})
            )
        ).all()
    )
    return [
        Conflict(index, event.event_id)
        for index, event in enumerate(events)
        if owners.get(event.event_id, event.customer_id) != event.customer_id
    ]


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
