"""The Celery application: ``celery -A worker worker`` and ``celery -A worker beat``.

The core never imports ``tasks``; Celery loads the task modules by name (``include``).
With no broker configured, messages go through a SQLite file next to the database, so web,
worker and beat run on one machine with no server at all.
"""

from __future__ import annotations

from celery import Celery

from worker.config import Settings, get_settings

TASK_MODULES = ["tasks.inbox", "tasks.usage", "tasks.notifications", "tasks.maintenance"]
DEFAULT_BROKER_URL = "sqla+sqlite:///celery-broker.db"


def make_celery(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    broker = settings.broker_url or DEFAULT_BROKER_URL
    celery = Celery("billing_worker", broker=broker, include=TASK_MODULES)
    celery.conf.update(
        # At-least-once delivery: a task is acknowledged only after it finished, and requeued
        # if its worker dies. Tasks are idempotent against the database, so redelivery is safe.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        timezone="UTC",
        # The web process enqueues after commit; a dead broker must not hang a request.
        broker_connection_timeout=2,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": 3600, "max_retries": 1},
        beat_schedule={
            # Usage: bill events whose enqueue was lost; settle unbilled usage after top-ups.
            "usage-sweep": {"task": "tasks.usage.sweep", "schedule": 30.0},
            "usage-settle": {"task": "tasks.usage.settle", "schedule": 300.0},
        },
    )
    return celery


app = make_celery()
