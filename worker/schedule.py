"""Named periodic tasks: what beat runs, what ``billing-worker tasks run NAME`` and
``POST /admin/tasks/{name}`` trigger, and how to run each inline (``--sync``).

Each area registers its own entries here; ``worker.celery`` builds ``beat_schedule`` from them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from worker.config import Settings


@dataclass(frozen=True)
class ScheduledTask:
    name: str  # the operator's name, e.g. "check-low-balances"
    task: str  # the Celery task name (send_task / celery call)
    description: str
    every: Callable[[Settings], float]  # beat interval in seconds
    run_sync: Callable[[Settings], Any]  # the same work, inline, returning a JSON-able summary


def _scan(settings: Settings) -> Any:
    from worker import lowbalance

    return lowbalance.scan(settings).as_dict()


def _dispatch(settings: Settings) -> Any:
    from worker import notify

    return {"attempted": notify.dispatch_due(settings)}


def _sweep_inbox(settings: Settings) -> Any:
    # Inline: process each stale event here instead of sending it to the workers.
    from worker import inbox
    from worker.db import transaction

    with transaction(settings) as session:
        ids = inbox.stale_pending_ids(session, settings.inbox_sweep_seconds)
    outcomes: dict[str, int] = {}
    for event_id in ids:
        with transaction(settings) as session:
            status = inbox.process_event(session, event_id).status
        outcomes[status] = outcomes.get(status, 0) + 1
    return {"swept": len(ids), **outcomes}


def _bill_usage(settings: Settings) -> Any:
    from worker import usage
    from worker.db import transaction

    billed = 0
    while True:
        with transaction(settings) as session:
            result = usage.bill_batch(session)
        billed += result.events
        if result.events < usage.BATCH_SIZE:
            return {"billed": billed}


def _settle_usage(settings: Settings) -> Any:
    from worker import usage
    from worker.db import transaction

    with transaction(settings) as session:
        results = usage.settle(session)
    return {"settled_wallets": len(results), "debited": sum(r.debited for r in results)}


REGISTRY: dict[str, ScheduledTask] = {
    t.name: t
    for t in (
        ScheduledTask(
            name="sweep-inbox",
            task="tasks.inbox.sweep_inbox",
            description="Re-send webhook events still pending after INBOX_SWEEP_SECONDS.",
            every=lambda s: s.inbox_sweep_seconds,
            run_sync=_sweep_inbox,
        ),
        ScheduledTask(
            name="bill-usage",
            task="tasks.usage.sweep",
            description="Bill pending usage events (covers a lost enqueue after ingest).",
            every=lambda s: 30.0,
            run_sync=_bill_usage,
        ),
        ScheduledTask(
            name="settle-usage",
            task="tasks.usage.settle",
            description="Debit outstanding unbilled usage from wallets topped up since.",
            every=lambda s: 300.0,
            run_sync=_settle_usage,
        ),
        ScheduledTask(
            name="check-low-balances",
            task="tasks.notifications.scan_low_balances",
            description="Find wallets whose low-balance state disagrees with their balance.",
            every=lambda s: s.low_balance_scan_seconds,
            run_sync=_scan,
        ),
        ScheduledTask(
            name="dispatch-notifications",
            task="tasks.notifications.dispatch_due",
            description="Deliver due notifications (retries, and sends lost after commit).",
            every=lambda s: s.notify_dispatch_seconds,
            run_sync=_dispatch,
        ),
    )
}


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    return {
        t.name: {
            "task": t.task,
            "schedule": float(t.every(settings)),
            # A run that waited longer than one interval is superseded by the next one.
            "options": {"expires": float(t.every(settings))},
        }
        for t in REGISTRY.values()
    }


def lookup(name: str) -> ScheduledTask | None:
    """By operator name or by Celery task name."""
    return REGISTRY.get(name) or next((t for t in REGISTRY.values() if t.task == name), None)
