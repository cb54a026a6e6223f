"""What a balance change brings with it: the wallet's low-balance check, in the same
transaction, and the delivery of the notifications written there, after it commits.

``worker.ledger`` calls ``entry_posted`` for every entry it writes; that notes the wallet (and
its state as the posting left it) in ``session.info``, and writes a
``wallet.ledger_entry.created`` outbox row if anyone subscribes. Listeners on every Session,
installed by the Celery app, ``create_app`` and the CLI, then:

- before the commit, reconcile each changed wallet's ``low_state`` (``worker.notify.lowbalance``) —
  only the wallets whose state may disagree with their new balance, which the posting already
  told us, so the usual entry costs nothing more. Checking inside the transaction means a
  crossing and its ``wallet.balance_low`` message commit with the entry that caused it; no
  check can be lost between the commit and a worker;
- after the commit, publish ``tasks.notifications.deliver`` by name for each outbox message
  through the port in ``worker.notify.publish``, which ``tasks.publisher`` fills with Celery
  (the core never imports Celery or ``tasks``; nothing is published for a rollback).

Publishing is best effort: with the broker down a request still succeeds at once, and the
outbox sweeper sends what was not enqueued.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import event
from sqlalchemy.orm import Session

from worker.config import get_settings
from worker.infra.db import settings_of
from worker.infra.metrics import LEDGER_ENTRIES
from worker.models import LedgerEntry
from worker.notify import endpoints, lowbalance, outbox
from worker.notify.publish import publish

log = logging.getLogger(__name__)

CHANGED_KEY = "bw_changed_wallets"  # {(customer_id, currency): WalletState | None}
ENTRIES_KEY = "bw_entries_posted"  # [(direction, event_type)] for the metrics, after commit
DELIVER_TASK = "tasks.notifications.deliver"
_KEYS = (CHANGED_KEY, ENTRIES_KEY, outbox.SESSION_KEY)

_installed = False


def entry_posted(
    session: Session, entry: LedgerEntry, state: lowbalance.WalletState | None = None
) -> None:
    """Called by ``worker.ledger`` in the entry's transaction. Never commits.

    ``state``: the wallet as this entry left it, with its customer's threshold overrides, when
    the posting read them anyway; without it the wallet is checked in full before commit.
    """
    session.info.setdefault(CHANGED_KEY, {})[(entry.customer_id, entry.currency)] = state
    session.info.setdefault(ENTRIES_KEY, []).append(
        ("credit" if entry.is_credit else "debit", entry.event_type)
    )
    if endpoints.is_subscribed(session, "wallet.ledger_entry.created"):
        from worker.ledger.schemas import LedgerEntryOut, dump

        outbox.enqueue_event(
            session,
            "wallet.ledger_entry.created",
            {"payload_type": "LedgerEntry", **dump(LedgerEntryOut.of(entry))},
        )


def wallet_changed(session: Session, customer_id: str, currency: str) -> None:
    """A hold moved on the wallet (its available balance changed without a ledger entry):
    check it in full before commit. Never commits."""
    session.info.setdefault(CHANGED_KEY, {})[(customer_id, currency)] = None


@contextmanager
def savepoint(session: Session) -> Iterator[None]:
    """``session.begin_nested()`` that also forgets what the rolled-back part posted: its
    wallets, its entries for the metrics, its outbox message ids."""
    saved = {key: copy.copy(session.info.get(key)) for key in _KEYS}
    try:
        with session.begin_nested():
            yield
    except BaseException:
        for key, value in saved.items():
            if value is None:
                session.info.pop(key, None)
            else:
                session.info[key] = value
        raise


def _before_commit(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint being released; the check runs once, at the real commit
    changed = session.info.get(CHANGED_KEY)
    if not changed:
        return
    configured = settings_of(session).low_balance_threshold_map
    for (customer_id, currency), state in list(changed.items()):
        if state is None or lowbalance.may_disagree(state, configured):
            # The wallet row is already locked by this transaction's own UPDATE.
            lowbalance.reconcile(session, customer_id, currency, observed=state)


def _after_commit(session: Session) -> None:
    session.info.pop(CHANGED_KEY, None)
    posted = session.info.pop(ENTRIES_KEY, None)
    messages = session.info.pop(outbox.SESSION_KEY, None)
    for direction, event_type in posted or ():
        LEDGER_ENTRIES.labels(direction=direction, event_type=event_type).inc()
    if not messages:
        return
    # The Celery app and its worker serve the process's own settings; a session opened on
    # other settings (a test's scratch database, a tool) has no worker listening for it.
    session_settings = session.info.get("settings")
    if session_settings is not None and session_settings != get_settings():
        return
    for message_id in messages:
        publish(DELIVER_TASK, [message_id])


def _after_rollback(session: Session) -> None:
    for key in _KEYS:
        session.info.pop(key, None)


def install() -> None:
    """Register the listeners on every Session in this process (idempotent)."""
    global _installed
    if _installed:
        return
    event.listen(Session, "before_commit", _before_commit)
    event.listen(Session, "after_commit", _after_commit)
    event.listen(Session, "after_rollback", _after_rollback)
    _installed = True


def uninstall() -> None:
    """Remove the listeners again (tests start each one from a fresh process's state)."""
    global _installed
    if not _installed:
        return
    event.remove(Session, "before_commit", _before_commit)
    event.remove(Session, "after_commit", _after_commit)
    event.remove(Session, "after_rollback", _after_rollback)
    _installed = False
