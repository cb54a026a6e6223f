"""The durable inbox: provider webhooks are stored first, then processed exactly once.

Lifecycle of a row: ``pending`` (stored, not yet applied) -> ``processed`` (its ledger change is
committed) or ``ignored`` (nothing to do: an unknown type, a payment that is not a top-up) or
``failed`` (a permanent error, kept with its text; ``events replay`` re-runs it). A row stays
``pending`` while it waits for something (a refund whose payment has not arrived yet), with
the reason in ``error``; the sweeper re-enqueues pending rows, so nothing is lost when an
enqueue or a worker is. Fresh events are applied in batches (``process_pending``); waiting
ones, replays and swept ones one at a time (``process_event``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from worker import commit_hooks
from worker.config import Settings
from worker.db import autocommit_first, transaction
from worker.errors import BillingError, NotFound
from worker.models import InboxEvent, utcnow

STATUSES = ("pending", "processed", "failed", "ignored")
PROVIDERS = ("dodo", "stripe")


@dataclass
class Handled:
    """What a handler did: ``processed`` with a result, or ``ignored`` with the reason."""

    status: str
    result: dict[str, Any] = field(default_factory=dict)


class NotReady(Exception):
    """The event depends on one not applied yet (a refund before its payment): retry later."""


class EventNotFound(NotFound):
    code = "EVENT_NOT_FOUND"

    def __init__(self, event_id: int) -> None:
        super().__init__(f"Inbox event {event_id} not found", event_id=event_id)


class EventNotReplayable(BillingError):
    code = "EVENT_NOT_REPLAYABLE"


Handler = Callable[[Session, dict[str, Any]], Handled]
# (provider, event type) -> handler; filled in by worker.payments.
HANDLERS: dict[tuple[str, str], Handler] = {}


# Batch preparation, registered by handler modules: one query for what a whole batch's
# handlers would each look up (``payments`` notes which customers exist, which payments are
# new). What they note is a hint for this transaction only, never a substitute for a lock.
Prefetcher = Callable[[Session, list[InboxEvent]], None]
PREFETCHERS: list[Prefetcher] = []


def prefetches(prefetcher: Prefetcher) -> Prefetcher:
    PREFETCHERS.append(prefetcher)
    return prefetcher


def handles(provider: str, *event_types: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        for event_type in event_types:
            HANDLERS[(provider, event_type)] = handler
        return handler

    return register


# -- receiving ---------------------------------------------------------------------------------


def _insert_statement(dialect: str):  # type: ignore[no-untyped-def]
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    return (
        insert(InboxEvent)
        .on_conflict_do_nothing(index_elements=["provider", "provider_event_id"])
        .returning(InboxEvent.id)
    )


# Built once per dialect and executed with parameters, so SQLAlchemy compiles it once.
_INSERTS = {name: _insert_statement(name) for name in ("postgresql", "sqlite")}


def _row(provider: str, provider_event_id: str, event_type: str, payload: dict[str, Any]):  # type: ignore[no-untyped-def]
    return {
        "provider": provider,
        "provider_event_id": provider_event_id,
        "event_type": event_type,
        "payload": payload,
        "status": "pending",
        "attempts": 0,
        "received_at": utcnow(),
    }


def record_event(
    session: Session,
    *,
    provider: str,
    provider_event_id: str,
    event_type: str,
    payload: dict[str, Any],
) -> int | None:
    """Store a verified delivery; returns its id, or None when it was already stored.

    ``ON CONFLICT DO NOTHING`` on (provider, provider_event_id): concurrent duplicate deliveries
    never raise, exactly one of them inserts, and the others learn it from the empty RETURNING.
    """
    statement = _INSERTS[session.get_bind().dialect.name]
    row = _row(provider, provider_event_id, event_type, payload)
    return session.execute(statement, row).scalar()


def store_event(
    settings: Settings,
    *,
    provider: str,
    provider_event_id: str,
    event_type: str,
    payload: dict[str, Any],
) -> int | None:
    """``record_event`` in its own committed transaction, for the receiver's hot path.

    On PostgreSQL the single INSERT runs in autocommit: a statement is its own transaction,
    committed (and, with synchronous_commit, durable) before the call returns — the same
    guarantee as BEGIN/INSERT/COMMIT in one round trip instead of three.
    """
    if settings.is_sqlite:
        with transaction(settings) as session:
            return record_event(
                session,
                provider=provider,
                provider_event_id=provider_event_id,
                event_type=event_type,
                payload=payload,
            )
    row = autocommit_first(
        settings,
        _PG_INSERT_SQL,  # the same statement as _INSERTS["postgresql"], at the driver level
        {
            "provider": provider,
            "provider_event_id": provider_event_id,
            "event_type": event_type,
            "payload": json.dumps(payload, separators=(",", ":")),
        },
    )
    return None if row is None else row[0]


_PG_INSERT_SQL = (
    "INSERT INTO inbox_events"
    " (provider, provider_event_id, event_type, payload, status, attempts, received_at)"
    " VALUES (%(provider)s, %(provider_event_id)s, %(event_type)s, %(payload)s::json,"
    " 'pending', 0, now())"
    " ON CONFLICT (provider, provider_event_id) DO NOTHING RETURNING id"
)


# -- processing --------------------------------------------------------------------------------


@dataclass
class Outcome:
    event_id: int
    status: str  # the row's status afterwards ("pending" while waiting; "missing")
    applied: bool = False  # this call changed the row
    waiting: str | None = None  # why it is still pending


def process_event(session: Session, event_id: int) -> Outcome:
    """Apply one stored event inside the caller's transaction. Never commits.

    The row is locked first (``FOR UPDATE``; SQLite's write lock already serialises), so two
    deliveries of the same task cannot both apply it; the second sees it is no longer pending.
    """
    event = session.scalar(
        select(InboxEvent)
        .where(InboxEvent.id == event_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if event is None:
        return Outcome(event_id, "missing")
    return _apply(session, event)


@dataclass
class Batch:
    """What ``process_pending`` did: every event it took, and what became of each."""

    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def waiting(self) -> list[int]:
        return [o.event_id for o in self.outcomes if o.waiting is not None]


# Concurrent batches would lock wallets in payload order, each holding some another wants
# (a deadlock PostgreSQL breaks only after deadlock_timeout): batches take turns instead, on
# this transaction-scoped advisory lock. Single events (process_event) do not take it.
_BATCH_LOCK = 0x62772D696E626F78  # "bw-inbox"


def process_pending(session: Session, limit: int = 100) -> Batch:
    """Apply up to ``limit`` fresh pending events, oldest first, in the caller's transaction.

    One transaction for the batch: the events' statuses and their ledger effects commit
    together, or none of them does. Rows locked by another transaction (a ``process_event``
    running) are skipped (``SKIP LOCKED``), and so are events already waiting for another
    (``error`` set): their own retries and the sweeper handle those. Transient database
    errors propagate, as in ``process_event``. Never commits.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(_BATCH_LOCK)))
    events = session.scalars(
        select(InboxEvent)
        .where(InboxEvent.status == "pending", InboxEvent.error.is_(None))
        .order_by(InboxEvent.received_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    ).all()
    if not events:
        return Batch()
    for prefetch in PREFETCHERS:
        prefetch(session, events)
    # Optimistic first: the whole batch in one savepoint, each event's row marked afterwards
    # (one executemany UPDATE at commit). Most batches have nothing but good events, and this
    # saves two round trips per event and one per row. If any handler raises, everything the
    # pass wrote is rolled back and the batch runs again with a savepoint per event.
    try:
        with commit_hooks.savepoint(session):
            handled = [_handle(session, event) for event in events]
    except OperationalError:
        raise
    except Exception:
        return Batch([_apply(session, event, in_batch=True) for event in events])
    outcomes = []
    for event, result in zip(events, handled, strict=True):
        event.attempts += 1
        outcomes.append(_finish(event, result.status, result.result))
    return Batch(outcomes)


def _handle(session: Session, event: InboxEvent) -> Handled:
    handler = HANDLERS.get((event.provider, event.event_type))
    if handler is None:
        return Handled("ignored", {"reason": f"no handler for {event.event_type!r}"})
    return handler(session, event.payload)


def _apply(session: Session, event: InboxEvent, *, in_batch: bool = False) -> Outcome:
    """The handler runs in a savepoint: a permanent error rolls back its partial writes and the
    row is marked ``failed`` with the error, in this same transaction. Transient database
    errors (connection lost, serialization/deadlock, a unique race with a concurrent event)
    propagate so the caller retries the whole transaction — except a unique race inside a
    batch: that one event is rolled back to its savepoint and left waiting, to be retried on
    its own, so the rest of the batch still commits."""
    event_id = event.id
    if event.status != "pending":
        return Outcome(event_id, event.status)
    event.attempts += 1
    try:
        with commit_hooks.savepoint(session):
            handled = _handle(session, event)
    except NotReady as exc:
        event.error = f"waiting: {exc}"
        session.flush()
        return Outcome(event_id, "pending", waiting=str(exc))
    except IntegrityError as exc:
        if not in_batch:
            raise
        event.error = f"waiting: retry after a concurrent write ({type(exc.orig).__name__})"
        session.flush()
        return Outcome(event_id, "pending", waiting=event.error)
    except OperationalError:
        raise
    except Exception as exc:  # permanent: visible, replayable, never retried in a loop
        event.status = "failed"
        event.error = f"{type(exc).__name__}: {exc}"
        event.processed_at = utcnow()
        session.flush()
        return Outcome(event_id, "failed", applied=True)
    return _finish(event, handled.status, handled.result)


def _finish(event: InboxEvent, status: str, result: dict[str, Any]) -> Outcome:
    event.status = status
    event.result = result
    event.error = None
    event.processed_at = utcnow()
    return Outcome(event.id, status, applied=True)


def stale_pending_ids(session: Session, older_than_seconds: int, limit: int = 1000) -> list[int]:
    """Pending rows received more than ``older_than_seconds`` ago, oldest first."""
    cutoff = utcnow() - timedelta(seconds=older_than_seconds)
    return list(
        session.scalars(
            select(InboxEvent.id)
            .where(InboxEvent.status == "pending", InboxEvent.received_at < cutoff)
            .order_by(InboxEvent.received_at)
            .limit(limit)
        )
    )


# -- operating ---------------------------------------------------------------------------------


def list_events(
    session: Session,
    *,
    status: str | None = None,
    provider: str | None = None,
    limit: int = 50,
) -> list[InboxEvent]:
    query = select(InboxEvent).order_by(InboxEvent.id.desc()).limit(limit)
    if status:
        query = query.where(InboxEvent.status == status)
    if provider:
        query = query.where(InboxEvent.provider == provider)
    return list(session.scalars(query))


def get_event(session: Session, event_id: int) -> InboxEvent:
    event = session.get(InboxEvent, event_id)
    if event is None:
        raise EventNotFound(event_id)
    return event


def reset_for_replay(session: Session, event_id: int) -> InboxEvent:
    """Put a failed or ignored event back to pending. Replaying stays exactly-once: every
    ledger effect carries a business idempotency key (``payment:…``, ``refund:…``)."""
    event = get_event(session, event_id)
    if event.status not in ("failed", "ignored", "pending"):
        raise EventNotReplayable(
            f"Inbox event {event_id} is {event.status}; only failed, ignored or pending "
            "events can be replayed",
            event_id=event_id,
            status=event.status,
        )
    session.execute(
        update(InboxEvent)
        .where(InboxEvent.id == event_id)
        .values(status="pending", error=None, processed_at=None)
    )
    return event


# The handlers register themselves on import; importing them here means every caller of
# process_event sees them.
from worker import payments  # noqa: E402, F401
