"""Named periodic tasks: what beat runs, what ``billing-worker tasks run NAME`` and
``POST /admin/tasks/{name}`` trigger, and the core function each runs inline (``--sync``).

The Celery app builds ``beat_schedule`` from ``REGISTRY``; the bodies live in ``worker.jobs``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from worker import jobs
from worker.config import Settings


@dataclass(frozen=True)
class ScheduledTask:
    name: str  # the operator's name, e.g. "check-low-balances"
    task: str  # the Celery task name (send_task / celery call)
    description: str
    every: Callable[[Settings], float]  # beat interval in seconds
    run_sync: Callable[[Settings], Any]  # the same work, inline, returning a JSON-able summary


REGISTRY: dict[str, ScheduledTask] = {
    t.name: t
    for t in (
        ScheduledTask(
            name="sweep-inbox",
            task="tasks.inbox.sweep_inbox",
            description="Re-send webhook events still pending after INBOX_SWEEP_SECONDS.",
            every=lambda s: s.inbox_sweep_seconds,
            run_sync=jobs.sweep_inbox,
        ),
        ScheduledTask(
            name="bill-usage",
            task="tasks.usage.sweep",
            description="Bill pending usage events (covers a lost enqueue after ingest).",
            every=lambda s: 30.0,
            run_sync=jobs.bill_usage,
        ),
        ScheduledTask(
            name="settle-usage",
            task="tasks.usage.settle",
            description="Debit outstanding unbilled usage from wallets topped up since.",
            every=lambda s: 300.0,
            run_sync=jobs.settle_usage,
        ),
        ScheduledTask(
            name="expire-credits",
            task="tasks.ledger.expire_credits",
            description="Expire credit lots past their expiry; notify of lots expiring soon.",
            every=lambda s: s.credit_expiry_seconds,
            run_sync=jobs.expire_credits,
        ),
        ScheduledTask(
            name="release-expired-holds",
            task="tasks.ledger.release_expired_holds",
            description="Release holds past their expiry (wallet.hold_expired for each).",
            every=lambda s: s.hold_expiry_seconds,
            run_sync=jobs.release_expired_holds,
        ),
        ScheduledTask(
            name="check-low-balances",
            task="tasks.notifications.scan_low_balances",
            description="Find wallets whose low-balance state disagrees with their balance.",
            every=lambda s: s.low_balance_scan_seconds,
            run_sync=jobs.scan_low_balances,
        ),
        ScheduledTask(
            name="dispatch-notifications",
            task="tasks.notifications.dispatch_due",
            description="Deliver due notifications (retries, and sends lost after commit).",
            every=lambda s: s.notify_dispatch_seconds,
            run_sync=jobs.dispatch_notifications,
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
