"""Celery tasks for usage billing: thin loops of one-transaction calls into ``worker.usage``."""

from __future__ import annotations

import logging

from celery import Task
from sqlalchemy.exc import OperationalError

from worker import jobs, usage
from worker.config import get_settings
from worker.infra.celery_app import app
from worker.infra.db import transaction

log = logging.getLogger(__name__)

# Batches one task runs before handing the rest to a fresh task (keeps each task short, so a
# worker restart never redoes much and other queues get their turn).
MAX_BATCHES_PER_TASK = 20


# Database unreachable: retried soon (1, 2, 4, ... s) rather than left to beat's bill-usage
# sweep 30 s later. Safe either way: a batch that did commit left no pending events behind.
MAX_RETRIES = 6


@app.task(name="tasks.usage.bill_pending", bind=True, acks_late=True, max_retries=MAX_RETRIES)
def bill_pending(self: Task, batch_size: int = usage.BATCH_SIZE) -> int:
    """Bill pending events batch by batch until none is left; returns how many were billed.

    Safe to run any number of times, concurrently or redelivered: each batch locks its events
    (SKIP LOCKED) and marks them processed in the transaction that debits them.
    """
    settings = get_settings()
    billed = 0
    for _ in range(MAX_BATCHES_PER_TASK):
        try:
            with transaction(settings) as session:
                result = usage.bill_batch(session, limit=batch_size)
        except OperationalError as exc:
            log.warning("usage billing: database error, retrying: %s", exc)
            raise self.retry(exc=exc, countdown=min(2**self.request.retries, 30)) from exc
        billed += result.events
        if result.events < batch_size:
            return billed
    bill_pending.apply_async(kwargs={"batch_size": batch_size})
    return billed


@app.task(name="tasks.usage.sweep", acks_late=True)
def sweep() -> int:
    """Beat: bill whatever is pending, so an event whose enqueue was lost is never stuck."""
    return bill_pending(usage.BATCH_SIZE)


@app.task(name="tasks.usage.settle", acks_late=True)
def settle() -> int:
    """Beat: debit outstanding unbilled usage from wallets that have been topped up."""
    paid = jobs.settle_usage(get_settings())["debited"]
    if paid:
        log.info("settled %d minor units of unbilled usage", paid)
    return paid
