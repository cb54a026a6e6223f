"""Celery tasks (notifications): the low-balance scan and the outbox's delivery.

Each task re-reads state from the database before acting, so redelivery is harmless.
"""

from __future__ import annotations

from typing import Any

from worker import jobs, notify
from worker.config import get_settings
from worker.infra.celery_app import app


@app.task(name="tasks.notifications.scan_low_balances", acks_late=True)
def scan_low_balances() -> dict[str, int]:
    """Beat's safety net: fix every wallet whose state disagrees with its balance."""
    return jobs.scan_low_balances(get_settings())


@app.task(name="tasks.notifications.deliver", acks_late=True)
def deliver(message_id: str) -> dict[str, Any]:
    """One delivery attempt of one outbox message (a no-op unless it is pending and due)."""
    outcome = notify.deliver(get_settings(), message_id)
    return {"status": outcome.status, "status_code": outcome.status_code}


@app.task(name="tasks.notifications.dispatch_due", acks_late=True)
def dispatch_due() -> int:
    """Beat's outbox sweeper: retries that are due, and sends lost after commit."""
    return jobs.dispatch_notifications(get_settings())["attempted"]
