"""Operations, admin scope (as ``/admin/*`` and the CLI): inbox events and their replay,
notifications and their resend, the periodic tasks and "run now", the audit log.

Each action calls what the CLI's command calls (``billing-worker events replay``,
``notifications resend``) or what ``POST /admin/tasks/{name}`` calls, and records the same
audit entry with the signed-in key as its actor and ``via: dashboard``.
"""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, redirect, request, url_for

from tasks import beat as schedule
from tasks import enqueue
from webhooks.dashboard import bp, session
from webhooks.dashboard.views import page
from webhooks.scopes import requires
from worker import inbox, notify
from worker.access import audit
from worker.access.scopes import ADMIN
from worker.errors import BrokerUnavailable, TaskNotFound, ValidationFailed
from worker.infra.db import transaction

AUDIT_PAGE = 50


def _tx():  # type: ignore[no-untyped-def]
    return transaction(current_app.config["SETTINGS"])


def _choice(name: str, allowed: tuple[str, ...]) -> str | None:
    value = request.args.get(name) or None
    if value is not None and value not in allowed:
        raise ValidationFailed(name, f"must be one of {', '.join(allowed)}")
    return value


def _audit_page() -> int:
    raw = request.args.get("audit_page", "0")
    if not raw.isdigit() or int(raw) > 10_000:
        raise ValidationFailed("audit_page", "must be a page number")
    return int(raw)


@bp.get("/operations")
@requires(ADMIN)
def operations() -> tuple[str, int]:
    inbox_status = _choice("inbox_status", tuple(inbox.STATUSES))
    message_status = _choice("notification_status", ("pending", "delivered", "failed"))
    audit_page = _audit_page()
    settings = current_app.config["SETTINGS"]
    with _tx() as s:
        events = inbox.list_events(s, status=inbox_status, limit=50)
        messages = notify.list_messages(s, message_status, 50)
        entries = audit.list_entries(s, page_number=audit_page, page_size=AUDIT_PAGE + 1)
    tasks = [
        {"name": t.name, "every": t.every(settings), "description": t.description}
        for t in schedule.REGISTRY.values()
    ]
    return page(
        "operations.html",
        events=events,
        messages=messages,
        tasks=tasks,
        audit_entries=entries[:AUDIT_PAGE],
        audit_page=audit_page,
        audit_more=len(entries) > AUDIT_PAGE,
        inbox_status=inbox_status,
        notification_status=message_status,
        inbox_statuses=inbox.STATUSES,
        notice=request.args.get("notice_kind"),
        notice_detail=_notice(),
    )


# What an action redirects with, shown as the page's notice (only these, never free text).
NOTICES = {
    "replayed": "Event {target} replayed: now {detail}.",
    "resent": "Notification {target} resent: {detail}.",
    "triggered": "Task {target} enqueued (Celery id {detail}).",
}


def _notice() -> str | None:
    kind = request.args.get("notice_kind")
    if kind not in NOTICES:
        return None
    target = request.args.get("target", "")[:64]
    detail = request.args.get("detail", "")[:64]
    return NOTICES[kind].format(target=target, detail=detail)


def _back(kind: str, target: Any, detail: str) -> Response:
    return redirect(
        url_for("dashboard.operations", notice_kind=kind, target=str(target), detail=detail[:64]),
        303,
    )


@bp.post("/operations/inbox/<int:event_id>/replay")
@requires(ADMIN)
def replay_event(event_id: int) -> Response:
    """``billing-worker events replay``: back to pending, then processed here and now."""
    actor = session.principal().actor
    with _tx() as s:
        was = inbox.get_event(s, event_id).status
        event = inbox.reset_for_replay(s, event_id)
        audit.record(
            s,
            actor,
            "inbox.replayed",
            str(event_id),
            {
                "provider": event.provider,
                "event_type": event.event_type,
                "was": was,
                "via": "dashboard",
            },
        )
    with _tx() as s:
        inbox.process_event(s, event_id)
    with _tx() as s:
        status = inbox.get_event(s, event_id).status
    return _back("replayed", event_id, status)


@bp.post("/operations/notifications/<message_id>/resend")
@requires(ADMIN)
def resend_notification(message_id: str) -> Response:
    """``billing-worker notifications resend``: queued again (same webhook-id), tried now."""
    settings = current_app.config["SETTINGS"]
    with _tx() as s:
        notify.resend(s, message_id)
        audit.record(
            s, session.principal().actor, "notification.resent", message_id, {"via": "dashboard"}
        )
    outcome = notify.deliver(settings, message_id)
    detail = outcome.status + (f" (HTTP {outcome.status_code})" if outcome.status_code else "")
    return _back("resent", message_id, detail)


@bp.post("/operations/tasks/<name>/run")
@requires(ADMIN)
def run_task(name: str) -> Response:
    """``POST /admin/tasks/{name}``: enqueued for a worker, audited once it is sent."""
    task = schedule.lookup(name)
    if task is None:
        raise TaskNotFound(name, known=list(schedule.REGISTRY))
    try:
        task_id = enqueue.send_now(task.task)
    except Exception as exc:  # the broker is down: nothing was enqueued, say so
        raise BrokerUnavailable from exc
    with _tx() as s:
        audit.record(
            s,
            session.principal().actor,
            "task.triggered",
            task.name,
            {"task_id": task_id, "via": "dashboard"},
        )
    return _back("triggered", task.name, task_id)
