"""Celery tasks (ledger): credit expiry.

The task re-reads the lots from the database and each expiration is keyed by its lot, so a
redelivered or overlapping run expires nothing twice.
"""

from __future__ import annotations

from worker import jobs
from worker.config import get_settings
from worker.infra.celery_app import app


@app.task(name="tasks.ledger.expire_credits", acks_late=True)
def expire_credits() -> dict[str, int]:
    """Beat's credit expiry (every CREDIT_EXPIRY_SECONDS)."""
    return jobs.expire_credits(get_settings())
