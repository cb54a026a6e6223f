"""Celery tasks (inbox): apply stored provider events, and sweep up the ones left pending."""

from __future__ import annotations

import logging

from celery import Task
from celery.exceptions import MaxRetriesExceededError
from sqlalchemy.exc import IntegrityError, OperationalError

from worker import inbox
from worker.celery import app
from worker.config import get_settings
from worker.db import transaction

log = logging.getLogger(__name__)

# Transient failures (database unreachable, deadlock/serialization, a unique race with a
# concurrent event) retry with exponential backoff; after that the row is still pending and the
# sweeper re-sends it, so giving up here loses nothing.
MAX_RETRIES = 8
# A refund that arrived before its payment: retried a few times soon, then left to the sweeper.
WAITING_RETRIES = 5


def _backoff(retries: int) -> int:
    return min(2**retries, 300)


@app.task(
    name="tasks.inbox.process_event",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=MAX_RETRIES,
)
def process_event(self: Task, event_id: int) -> str:
    """Lock the inbox row, return if it is no longer pending, apply it, mark it: one commit."""
    try:
        with transaction() as session:
            outcome = inbox.process_event(session, int(event_id))
    except (OperationalError, IntegrityError) as exc:
        log.warning("inbox event %s: transient error, retrying: %s", event_id, exc)
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc
    if outcome.waiting is not None:
        try:
            raise self.retry(
                countdown=_backoff(self.request.retries + 1), max_retries=WAITING_RETRIES
            )
        except MaxRetriesExceededError:
            log.info("inbox event %s still waiting (%s); the sweeper retries", event_id, outcome)
    return outcome.status


@app.task(name="tasks.inbox.sweep_inbox", acks_late=True, reject_on_worker_lost=True)
def sweep_inbox() -> int:
    """Re-send every event pending longer than INBOX_SWEEP_SECONDS (a lost enqueue, a lost
    message, a killed worker). Sending twice is harmless: process_event is idempotent."""
    with transaction() as session:
        ids = inbox.stale_pending_ids(session, get_settings().inbox_sweep_seconds)
    for event_id in ids:
        process_event.apply_async(args=[event_id])
    if ids:
        log.info("sweep-inbox re-enqueued %d pending event(s)", len(ids))
    return len(ids)


def enqueue(event_id: int) -> bool:
    """Send ``process_event`` after the inbox commit, for the web process.

    Never raises and never retries: with the broker down the event is already stored and the
    sweeper sends it later, so the provider still gets its 2xx quickly.
    """
    try:
        process_event.apply_async(args=[event_id], retry=False)
        return True
    except Exception as exc:  # any broker failure; the row is safe in the inbox
        log.warning("could not enqueue inbox event %s (sweeper will): %s", event_id, exc)
        return False
