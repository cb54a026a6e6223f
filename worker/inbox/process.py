"""Processing stored events exactly once: one at a time (``process_event``, locking its row) or
in batches of fresh ones (``process_pending``), each handled by ``worker.inbox.handlers``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from worker.inbox import lanes
from worker.inbox.handlers import HANDLERS, PREFETCHERS
from worker.inbox.handling import Handled, NotReady
from worker.models import InboxEvent, utcnow
from worker.notify import commit_hooks


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
    # More fresh events may be pending than this batch took (others' lanes, or past its limit).
    more: bool = False

    @property
    def waiting(self) -> list[int]:
        return [o.event_id for o in self.outcomes if o.waiting is not None]


def process_pending(session: Session, limit: int = 100) -> Batch:
    """Apply up to ``limit`` fresh pending events, oldest first, in the caller's transaction.

    One transaction for the batch: the events' statuses and their ledger effects commit
    together, or none of them does. Any number of batches run at once on PostgreSQL: each
    takes whole customers' lanes and locks their wallets in one order first
    (``worker.inbox.lanes``), so a customer's events apply in arrival order and two batches
    never deadlock. Rows locked by another transaction (a ``process_event`` running) are
    skipped (``SKIP LOCKED``), and so are events already waiting for another (``error``
    set): their own retries and the sweeper handle those. Transient database errors
    propagate, as in ``process_event``. Never commits.
    """
    if session.get_bind().dialect.name == "postgresql":
        events, more = lanes.claim(session, limit)
    else:  # one writer at a time (BEGIN IMMEDIATE): the oldest events, in order
        events = list(
            session.scalars(
                select(InboxEvent)
                .where(InboxEvent.status == "pending", InboxEvent.error.is_(None))
                .order_by(InboxEvent.received_at, InboxEvent.id)
                .limit(limit)
                .execution_options(populate_existing=True)
            )
        )
        more = len(events) == limit
    if not events:
        return Batch(more=more)
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
        return Batch([_apply(session, event, in_batch=True) for event in events], more)
    outcomes = []
    for event, result in zip(events, handled, strict=True):
        event.attempts += 1
        outcomes.append(_finish(event, result.status, result.result))
    return Batch(outcomes, more)


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
