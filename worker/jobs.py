"""The bodies of the periodic and manual jobs: plain functions of ``Settings`` returning a
JSON-able summary.

Beat runs them through their Celery tasks (``tasks.beat`` names them), and
``billing-worker tasks run NAME --sync`` runs the same functions inline; each opens its own
transactions.
"""

from __future__ import annotations

from typing import Any

from worker import inbox, notify, usage
from worker.config import Settings
from worker.infra.db import transaction
from worker.ledger import expiry, holds
from worker.notify import lowbalance


def expire_credits(settings: Settings) -> dict[str, int]:
    """Expire every credit lot past its expiry (one ``expiration`` entry each, exactly once)
    and send the notices of lots expiring soon."""
    return expiry.expire_credits(settings).as_dict()


def release_expired_holds(
    settings: Settings, batch_size: int = holds.EXPIRY_BATCH
) -> dict[str, int]:
    """Release every hold past its expiry (status ``expired``, one ``wallet.hold_expired``
    each), ``batch_size`` holds per transaction."""
    expired = 0
    while True:
        with transaction(settings) as session:
            selected, moved = holds.expire_holds(session, limit=batch_size)
        expired += moved
        # A batch that moved nothing was overtaken by a capture or an overlapping run.
        if selected < batch_size or not moved:
            return {"expired": expired}


def scan_low_balances(settings: Settings) -> dict[str, int]:
    """Fix every wallet whose low-balance state disagrees with its balance."""
    return lowbalance.scan(settings).as_dict()


def dispatch_notifications(settings: Settings) -> dict[str, int]:
    """Deliver due notifications (retries, and sends lost after commit)."""
    return {"attempted": notify.dispatch_due(settings)}


def sweep_inbox(settings: Settings) -> dict[str, int]:
    """Process each event pending longer than INBOX_SWEEP_SECONDS, here, one per transaction."""
    with transaction(settings) as session:
        ids = inbox.stale_pending_ids(session, settings.inbox_sweep_seconds)
    outcomes: dict[str, int] = {}
    for event_id in ids:
        with transaction(settings) as session:
            status = inbox.process_event(session, event_id).status
        outcomes[status] = outcomes.get(status, 0) + 1
    return {"swept": len(ids), **outcomes}


def bill_usage(settings: Settings, batch_size: int = usage.BATCH_SIZE) -> dict[str, int]:
    """Bill pending usage events batch by batch until none is left."""
    billed = 0
    while True:
        with transaction(settings) as session:
            result = usage.bill_batch(session, limit=batch_size)
        billed += result.events
        if result.events < batch_size:
            return {"billed": billed}


def settle_usage(settings: Settings) -> dict[str, Any]:
    """Debit outstanding unbilled usage from wallets topped up since."""
    with transaction(settings) as session:
        results = usage.settle(session)
    return {"settled_wallets": len(results), "debited": sum(r.debited for r in results)}
