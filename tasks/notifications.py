"""Celery tasks (notifications): the low-balance scan and the outbox's delivery.

Each task re-reads state from the database before acting, so redelivery is harmless.
"""

from __future__ import annotations

from typing import Any

from worker import lowbalance, notify
from worker.celery import app
from worker.config import get_settings


@app.task(name="tasks.notifications.scan_low_balances", acks_late=True)
def scan_low_balances() -> dict[str, int]:
    """Beat's safety net: fix every wallet whose state disagrees with its balance."""
    return lowbalance.scan(get_settings()).as_dict()


@app.task(name="tasks.notifications.deliver", acks_late=True)
def deliver(message_id: str) -> dict[str, Any]:
    """One delivery attempt of one outbox message (a no-op unless it is pending and due)."""
    outcome = notify.deliver(get_settings(), message_id)
    return {"status": outcome.status, "status_code": outcome.status_code}


@app.task(name="tasks.notifications.dispatch_due", acks_late=True)
def dispatch_due() -> int:
    """Beat's outbox sweeper: retries that are due, and sends lost after commit."""
    return notify.dispatch_due(get_settings())
