"""Celery tasks (ledger): credit expiry, hold expiry.

The tasks re-read the lots and holds from the database; each expiration is keyed by its lot,
and a hold expires by a conditional move from ``active``, so a redelivered or overlapping run
expires nothing twice.
"""

from __future__ import annotations

from worker import jobs
from worker.config import get_settings
from worker.infra.celery_app import app


@app.task(name="tasks.ledger.expire_credits", acks_late=True)
def expire_credits() -> dict[str, int]:
    """Beat's credit expiry (every CREDIT_EXPIRY_SECONDS)."""
    return jobs.expire_credits(get_settings())


@app.task(name="tasks.ledger.release_expired_holds", acks_late=True)
def release_expired_holds() -> dict[str, int]:
    """Beat's hold expiry (every HOLD_EXPIRY_SECONDS)."""
    return jobs.release_expired_holds(get_settings())
