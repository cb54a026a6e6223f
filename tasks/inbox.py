"""Celery tasks (inbox): apply stored provider events in batches, one event on its own when it
must wait or be retried, and sweep up the ones left pending."""

from __future__ import annotations

import logging
import time

from celery import Task
from celery.exceptions import MaxRetriesExceededError
from sqlalchemy.exc import IntegrityError, OperationalError

from worker import inbox
from worker.config import get_settings
from worker.infra.celery_app import app
from worker.infra.db import transaction

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


# Events per transaction, and how long one task keeps taking batches before it hands the rest
# to a fresh task (short tasks: a restart redoes little, other queues get their turn).
BATCH_SIZE = 100
DRAIN_SECONDS = 5.0


@app.task(
    name="tasks.inbox.process_pending",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=MAX_RETRIES,
)
def process_pending(self: Task) -> int:
    """Apply pending events batch by batch until none is left; returns how many it applied.

    What the receiver sends after storing events (one message for any number of them). Safe
    to run any number of times, concurrently or redelivered: a batch locks its customers'
    lanes and rows and marks them in the transaction that applies them
    (``worker.inbox.lanes``), so concurrent tasks share the work.
    """
    deadline = time.monotonic() + DRAIN_SECONDS
    applied = 0
    while True:
        try:
            with transaction() as session:
                batch = inbox.process_pending(session, BATCH_SIZE)
        except OperationalError as exc:
            log.warning("inbox batch: database error, retrying: %s", exc)
            raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc
        applied += sum(o.applied for o in batch.outcomes)
        # A refund before its payment, an event that met a concurrent write: retried on its own.
        _one_by_one(batch.waiting, countdown=_backoff(1))
        # Done when nothing more is pending, or when this batch found nothing it could take:
        # the batches holding the rest keep going, each until it finds nothing either.
        if not batch.more or not batch.outcomes:
            return applied
        if time.monotonic() > deadline:
            process_pending.apply_async()
            return applied


def _one_by_one(ids: list[int], countdown: float = 0) -> None:
    for event_id in ids:
        process_event.apply_async(args=[event_id], countdown=countdown)


@app.task(name="tasks.inbox.sweep_inbox", acks_late=True, reject_on_worker_lost=True)
def sweep_inbox() -> int:
    """Re-send every event pending longer than INBOX_SWEEP_SECONDS (a lost enqueue, a lost
    message, a killed worker). Sending twice is harmless: process_event is idempotent."""
    with transaction() as session:
        ids = inbox.stale_pending_ids(session, get_settings().inbox_sweep_seconds)
    _one_by_one(ids)
    if ids:
        log.info("sweep-inbox re-enqueued %d pending event(s)", len(ids))
    return len(ids)
