"""Enqueueing from processes that only send (the web app): tasks by name, the Celery app built
on the first send, never at import.

Every send here is best effort: the rows it announces are already committed, and beat's
sweepers (``tasks.beat``) pick up whatever a lost message would have started.
"""

from __future__ import annotations

import logging

from tasks.coalesce import Coalescer

log = logging.getLogger(__name__)

PROCESS_PENDING_TASK = "tasks.inbox.process_pending"
BILL_PENDING_TASK = "tasks.usage.bill_pending"


def _send(name: str) -> None:
    from worker.infra.celery_app import get_app

    get_app().send_task(name, retry=False)


def _send_process_pending() -> None:
    try:
        _send(PROCESS_PENDING_TASK)
    except Exception as exc:  # any broker failure; the rows are safe in the inbox
        log.warning("could not enqueue inbox processing (the sweeper will): %s", exc)


# The receiver's enqueue: one process_pending message per KICK_INTERVAL at most, however many
# events were stored in it; sent from a background thread, after the events' commits.
KICK_INTERVAL = 0.02
_kicker = Coalescer(_send_process_pending, KICK_INTERVAL)


def enqueue_inbox() -> None:
    """Ask a worker to process the pending events, for the web process after its commit.

    Never blocks, raises or retries: the message is sent by a background thread (see
    ``Coalescer``), and with the broker down the events are already stored and the sweeper
    sends them later, so the provider still gets its 2xx at once.
    """
    _kicker.kick()


def enqueue_billing() -> None:
    """Ask a worker to bill pending events; a broker failure is logged, never raised.

    Called after the ingest transaction committed: the events are durable either way, and
    the beat ``sweep`` bills them if this message is lost.
    """
    try:
        _send(BILL_PENDING_TASK)
    except Exception as exc:  # the broker is down or unreachable; the sweeper covers it
        log.warning("could not enqueue usage billing (the sweeper will bill): %s", exc)


def send_now(name: str) -> str:
    """Send task ``name`` at once and answer its Celery id, for an operator who waits for the
    answer (``POST /admin/tasks/{name}``): a broker failure is raised, not left to a sweeper."""
    from worker.infra.celery_app import get_app

    return get_app().send_task(name, retry=False, timeout=2.0).id
