"""The audit log: operator actions, who did them, to what, and when. Append-only.

Recorded in the caller's session, so an action and its record commit (or roll back) together;
an action that is not transactional (sending a task to the broker) records after it happened.

Actions: ``apikey.created``, ``apikey.revoked``, ``endpoint.created``, ``endpoint.removed``,
``task.triggered`` (enqueued by HTTP or the CLI), ``task.run`` (``tasks run --sync``),
``inbox.replayed``, ``customer.updated``, ``customer.threshold_set``, ``notification.resent``
(from the dashboard), ``portal.link_created`` (a customer portal link handed out),
``hold.released`` (a hold released from the dashboard).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.ledger.validation import validate_page
from worker.models import AuditLog, utcnow


def record(
    session: Session,
    actor: str,
    action: str,
    target: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditLog:
    """Append one entry (never commits). ``details`` must be JSON and hold no secret."""
    entry = AuditLog(at=utcnow(), actor=actor, action=action, target=target, details=details or {})
    session.add(entry)
    return entry


def list_entries(
    session: Session,
    *,
    action: str | None = None,
    actor: str | None = None,
    page_number: int = 0,
    page_size: int = 50,
) -> list[AuditLog]:
    """Newest first, paged like the API's other lists."""
    page_number, page_size = validate_page(page_number, page_size)
    query = select(AuditLog).order_by(AuditLog.id.desc())
    if action is not None:
        query = query.where(AuditLog.action == action)
    if actor is not None:
        query = query.where(AuditLog.actor == actor)
    return list(session.scalars(query.offset(page_number * page_size).limit(page_size)))
