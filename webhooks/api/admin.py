"""Operator routes, admin scope only: ``POST /admin/tasks/{name}`` enqueues a periodic task
now; ``GET /admin/audit-log`` lists operator actions, newest first."""

from __future__ import annotations

from flask import Response, current_app, jsonify
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, Field

from tasks import beat as schedule
from tasks import enqueue
from webhooks.api.schemas import PageQuery
from webhooks.auth import BEARER_SECURITY, actor
from webhooks.errors import COMMON_RESPONSES
from webhooks.scopes import requires
from worker.access import audit
from worker.access.schemas import AuditEntryOut, AuditListOut
from worker.access.scopes import ADMIN
from worker.errors import BrokerUnavailable, TaskNotFound
from worker.infra.db import transaction

bp = APIBlueprint(
    "admin",
    __name__,
    url_prefix="/admin",
    abp_tags=[Tag(name="Operations")],
    abp_security=BEARER_SECURITY,
    abp_responses=COMMON_RESPONSES,
)


class TaskPath(BaseModel):
    name: str = Field(max_length=200, description="A name from `billing-worker tasks list`.")


class TaskEnqueuedOut(BaseModel):
    name: str
    task: str
    task_id: str = Field(description="The Celery task id.")


class AuditQuery(PageQuery):
    action: str | None = Field(None, max_length=64, description="e.g. `apikey.created`.")
    actor: str | None = Field(None, max_length=64, description="An API key id, `cli`, ...")


@bp.post("/tasks/<name>", responses={202: TaskEnqueuedOut})
@requires(ADMIN)
def run_task(path: TaskPath) -> Response:
    """Enqueue periodic task ``name`` (e.g. ``check-low-balances``); answers its Celery id."""
    task = schedule.lookup(path.name)
    if task is None:
        raise TaskNotFound(path.name, known=list(schedule.REGISTRY))

    try:
        task_id = enqueue.send_now(task.task)
    except Exception as exc:  # the broker is down: nothing was enqueued, say so
        raise BrokerUnavailable from exc
    # Recorded once the task is sent (a broker is not transactional): a send that failed
    # triggered nothing, so it is not an action to audit.
    with transaction(current_app.config["SETTINGS"]) as s:
        audit.record(s, actor(), "task.triggered", task.name, {"task_id": task_id, "via": "http"})
    out = TaskEnqueuedOut(name=task.name, task=task.task, task_id=task_id)
    response = jsonify(out.model_dump())
    response.status_code = 202
    return response


@bp.get("/audit-log", responses={200: AuditListOut})
@requires(ADMIN)
def audit_log(query: AuditQuery) -> Response:
    """Operator actions (keys created or revoked, tasks triggered, events replayed, ...)."""
    with transaction(current_app.config["SETTINGS"]) as s:
        entries = audit.list_entries(
            s,
            action=query.action,
            actor=query.actor,
            page_number=query.page_number,
            page_size=query.page_size,
        )
        out = AuditListOut(items=[AuditEntryOut.of(e) for e in entries])
    return jsonify(out.model_dump())
