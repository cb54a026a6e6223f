"""Reading stored usage events."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from worker import ledger
from worker.errors import NotFound, ValidationFailed
from worker.infra.db import settings_of
from worker.models import UsageEvent

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
