"""The transactional outbox: one row per destination, written in the caller's transaction.

``enqueue_event`` writes the rows, so a notification exists if and only if the change that
caused it committed; ``worker.notify.delivery`` sends them. The outbox row id is the
``webhook-id``: it stays the same across retries, so receivers can deduplicate.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from worker.config import Settings
from worker.errors import NotFound, ValidationFailed
from worker.infra.db import settings_of
from worker.models import DeliveryAttempt, OutboxMessage, WebhookEndpoint, new_id, utcnow
from worker.notify.endpoints import EMAIL_EVENT_TYPES, EVENT_TYPES, _subscribes

SESSION_KEY = "bw_outbox_new"  # message ids written in this session, delivered after commit
ENDPOINTS_KEY = "bw_endpoints"  # (transaction, enabled endpoints read in it)


def envelope(settings: Settings, event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    """Dodo Payments' webhook envelope."""
    now = utcnow().isoformat().replace("+00:00", "Z")
    return {"business_id": settings.business_id, "type": event_type, "timestamp": now, "data": data}


def enqueue_event(session: Session, event_type: str, data: dict[str, Any]) -> list[OutboxMessage]:
    """Write one outbox message per destination subscribed to ``event_type``. Never commits.

    Call it inside the transaction of the change being announced; the messages are sent by
    the worker after that transaction commits (and by the beat sweeper if that send is lost).
    """
    if event_type not in EVENT_TYPES:
        raise ValidationFailed("type", f"unknown event type {event_type!r}")
    settings = settings_of(session)
    payload = envelope(settings, event_type, data)
    now = utcnow()
    targets: list[tuple[str, str | None]] = []
    if settings.notify_webhook is not None:
        targets.append(("webhook", None))
    targets += [
        ("webhook", e.id) for e in _endpoints_in(session) if _subscribes(e.events, event_type)
    ]
    if settings.smtp is not None and event_type in EMAIL_EVENT_TYPES:
        targets.append(("email", None))
    messages = [
        OutboxMessage(
            id=new_id("msg"),
            endpoint_id=endpoint_id,
            channel=channel,
            event_type=event_type,
            payload=payload,
            status="pending",
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
        for channel, endpoint_id in targets
    ]
    # No flush here: the rows go out with the transaction's next flush, batched when a scan
    # announces many crossings in one transaction.
    session.add_all(messages)
    if messages:
        session.info.setdefault(SESSION_KEY, []).extend(m.id for m in messages)
    return messages


def _endpoints_in(session: Session) -> list[Any]:
    """Enabled endpoints, read once per transaction (not from the few-seconds cache: a
    message is being written, so a just-added endpoint must get it)."""
    current = session.get_transaction()
    cached = session.info.get(ENDPOINTS_KEY)
    if cached is not None and cached[0] is current:
        return cached[1]
    endpoints = list(
        session.execute(
            select(WebhookEndpoint.id, WebhookEndpoint.events).where(
                WebhookEndpoint.enabled.is_(True)
            )
        )
    )
    session.info[ENDPOINTS_KEY] = (current, endpoints)
    return endpoints


# -- inspection and manual resend ----------------------------------------------------------


def list_messages(
    session: Session, status: str | None = None, limit: int = 50
) -> list[OutboxMessage]:
    query = select(OutboxMessage).order_by(OutboxMessage.created_at.desc(), OutboxMessage.id)
    if status is not None:
        if status not in ("pending", "delivered", "failed"):
            raise ValidationFailed("status", "must be one of pending, delivered, failed")
        query = query.where(OutboxMessage.status == status)
    return list(session.scalars(query.limit(limit)))


def attempts_of(session: Session, message_id: str) -> list[DeliveryAttempt]:
    return list(
        session.scalars(
            select(DeliveryAttempt)
            .where(DeliveryAttempt.message_id == message_id)
            .order_by(DeliveryAttempt.id)
        )
    )


def resend(session: Session, message_id: str) -> OutboxMessage:
    """Queue a message again (any status) with a fresh retry schedule; same webhook-id."""
    message = session.get(OutboxMessage, message_id)
    if message is None:
        raise NotFound(f"Notification {message_id} not found", message_id=message_id)
    message.status = "pending"
    message.attempts = 0
    message.next_attempt_at = utcnow()
    message.delivered_at = None
    session.flush()
    # Not enqueued after commit: the caller attempts it inline (and the sweeper retries).
    return message


def count_by_status(session: Session) -> dict[str, int]:
    """How many notifications are in each status (the dashboard's overview)."""
    rows = session.execute(
        select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status)
    ).all()
    return {status: int(n) for status, n in rows}
