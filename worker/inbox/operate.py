"""Operating the inbox: the sweeper's stale rows, listing, and replaying failed events."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from worker.inbox.handling import EventNotFound, EventNotReplayable
from worker.models import InboxEvent, utcnow


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


def count_by_status(session: Session) -> dict[str, int]:
    """How many events are in each status (the dashboard's overview)."""
    rows = session.execute(
        select(InboxEvent.status, func.count()).group_by(InboxEvent.status)
    ).all()
    return {status: int(n) for status, n in rows}
