"""``POST /admin/tasks/{name}``: enqueue a periodic task now (admin API keys only)."""

from __future__ import annotations

from flask import Response, g, jsonify
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, Field

from tasks import beat as schedule
from tasks import enqueue
from webhooks.auth import BEARER_SECURITY
from webhooks.errors import COMMON_RESPONSES, ErrorOut
from worker.errors import BrokerUnavailable, Forbidden, TaskNotFound

bp = APIBlueprint(
    "admin",
    __name__,
    url_prefix="/admin",
    abp_tags=[Tag(name="Operations")],
    abp_security=BEARER_SECURITY,
    abp_responses={**COMMON_RESPONSES, 403: ErrorOut},
)


class TaskPath(BaseModel):
    name: str = Field(max_length=200, description="A name from `billing-worker tasks list`.")


class TaskEnqueuedOut(BaseModel):
    name: str
    task: str
    task_id: str = Field(description="The Celery task id.")


@bp.post("/tasks/<name>", responses={202: TaskEnqueuedOut})
def run_task(path: TaskPath) -> Response:
    """Enqueue periodic task ``name`` (e.g. ``check-low-balances``); answers its Celery id."""
    if not getattr(g, "principal", None) or not g.principal.is_admin:
        raise Forbidden("This route needs an API key with admin scope")
    task = schedule.lookup(path.name)
    if task is None:
        raise TaskNotFound(path.name, known=list(schedule.REGISTRY))

    try:
        task_id = enqueue.send_now(task.task)
    except Exception as exc:  # the broker is down: nothing was enqueued, say so
        raise BrokerUnavailable from exc
    out = TaskEnqueuedOut(name=task.name, task=task.task, task_id=task_id)
    response = jsonify(out.model_dump())
    response.status_code = 202
    return response
