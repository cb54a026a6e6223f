"""What happens after a balance change commits: the worker checks the wallet and sends
the notifications written in that transaction.

``worker.ledger`` calls ``entry_posted`` for every entry it writes; that notes the wallet in
``session.info`` (and writes a ``wallet.ledger_entry.created`` outbox row if anyone subscribes).
An ``after_commit`` listener on every Session, installed by the Celery app, ``create_app`` and
the CLI, then enqueues ``tasks.notifications.check_wallet`` / ``deliver`` by name: the core
never imports ``tasks``, and nothing is enqueued for a transaction that rolled back.

Publishing is best effort: with the broker down a request still succeeds at once, and the
scheduled scan and the outbox sweeper catch what was not enqueued.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

from worker import notify
from worker.config import get_settings
from worker.metrics import LEDGER_ENTRIES
from worker.models import LedgerEntry

log = logging.getLogger(__name__)

CHANGED_KEY = "bw_changed_wallets"  # {(customer_id, currency): last entry id}
ENTRIES_KEY = "bw_entries_posted"  # [(direction, event_type)] for the metrics, after commit
CHECK_TASK = "tasks.notifications.check_wallet"
DELIVER_TASK = "tasks.notifications.deliver"
PUBLISH_TIMEOUT = 2.0

_installed = False


def entry_posted(session: Session, entry: LedgerEntry) -> None:
    """Called by ``worker.ledger`` in the entry's transaction. Never commits."""
    session.info.setdefault(CHANGED_KEY, {})[(entry.customer_id, entry.currency)] = entry.id
    session.info.setdefault(ENTRIES_KEY, []).append(
        ("credit" if entry.is_credit else "debit", entry.event_type)
    )
    if notify.is_subscribed(session, "wallet.ledger_entry.created"):
        from worker.schemas import LedgerEntryOut, dump

        notify.enqueue_event(
            session,
            "wallet.ledger_entry.created",
            {"payload_type": "LedgerEntry", **dump(LedgerEntryOut.of(entry))},
        )


def _publish(name: str, args: list[Any]) -> bool:
    from worker.celery import app

    try:
        app.send_task(
            name,
            args=args,
            retry=False,
            # Bound the wait on a broker that accepts the connection but does not answer.
            timeout=PUBLISH_TIMEOUT,
        )
    except Exception as exc:  # any broker failure: the sweeper and the scan are the safety net
        log.warning("could not enqueue %s: %s", name, exc, extra={"task": name})
        return False
    return True


def _after_commit(session: Session) -> None:
    changed = session.info.pop(CHANGED_KEY, None)
    posted = session.info.pop(ENTRIES_KEY, None)
    messages = session.info.pop(notify.SESSION_KEY, None)
    for direction, event_type in posted or ():
        LEDGER_ENTRIES.labels(direction=direction, event_type=event_type).inc()
    if not (changed or messages):
        return
    # The Celery app and its worker serve the process's own settings; a session opened on
    # other settings (a test's scratch database, a tool) has no worker listening for it.
    session_settings = session.info.get("settings")
    if session_settings is not None and session_settings != get_settings():
        return
    for message_id in messages or ():
        _publish(DELIVER_TASK, [message_id])
    for customer_id, currency in changed or ():
        _publish(CHECK_TASK, [customer_id, currency])


def _after_rollback(session: Session) -> None:
    for key in (CHANGED_KEY, ENTRIES_KEY, notify.SESSION_KEY):
        session.info.pop(key, None)


def install() -> None:
    """Register the after-commit listener on every Session in this process (idempotent)."""
    global _installed
    if _installed:
        return
    event.listen(Session, "after_commit", _after_commit)
    event.listen(Session, "after_rollback", _after_rollback)
    _installed = True
