"""The Celery application: ``celery -A worker worker`` and ``celery -A worker beat`` (through
the ``worker.celery`` shim).

One of the core's edges (see ``[tool.importlinter]``): it imports Celery, and ``tasks`` for the
beat registry and the publisher; Celery loads the task modules by name (``include``). The app
is built on first use (``get_app()``), so a process that only imports this module (the web
app, a test) builds none.
With no broker configured, messages go through a SQLite file next to the database, so web,
worker and beat run on one machine with no server at all.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import Celery, signals

from worker.config import Settings, get_settings
from worker.notify import commit_hooks

TASK_MODULES = [
    "tasks.inbox",
    "tasks.usage",
    "tasks.notifications",
    "tasks.ledger",
    "tasks.maintenance",
]
DEFAULT_BROKER_URL = "sqla+sqlite:///celery-broker.db"


def make_celery(settings: Settings | None = None) -> Celery:
    from tasks import publisher
    from tasks.beat import beat_schedule

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
        broker_transport_options=_transport_options(broker, settings.broker_visibility_timeout),
        broker_transport=_transport(broker),
        beat_schedule=beat_schedule(settings),
    )
    # Balance changes committed in tasks get their low-balance check and notifications, and
    # the notifications' delivery is published through this broker after commit.
    commit_hooks.install()
    publisher.install()
    return celery


def _transport(broker: str) -> str | None:
    # Plain redis:// only: kombu decides on TLS from the URL's scheme name, so rediss:// keeps
    # its stock transport (and the crash on broker loss that worker.infra.redis_transport closes).
    if broker.startswith("redis://"):
        from worker.infra.redis_transport import TRANSPORT

        return TRANSPORT
    return None


def _transport_options(broker: str, visibility_timeout: int = 3600) -> dict[str, object]:
    if broker.startswith(("redis://", "rediss://")):
        return {
            # A message taken by a worker that died unacked goes back to the queue after this.
            # Tasks are idempotent, so a task outliving it and running twice is harmless.
            "visibility_timeout": visibility_timeout,
            # kombu scans for such messages every interval x throttle seconds (default 10 x 10):
            # scan every interval, and never less often than the timeout itself asks for.
            "unacked_restore_interval": max(1, min(10, visibility_timeout // 2)),
            "unacked_restore_throttle": 1,
            # A dead or unreachable broker fails a publish in about a second instead of
            # hanging the web request (the inbox row is already committed; the sweeper sends
            # it later).
            "socket_connect_timeout": 1,
            "socket_timeout": 2,
            # Establishing the publish connection: one immediate retry, no 2 s back-off sleep.
            "max_retries": 1,
            "interval_start": 0,
            "interval_step": 0.2,
        }
    # kombu's SQLAlchemy transport hands its options to create_engine(): Redis-only keys would
    # break every publish on the embedded default.
    return {}


@signals.setup_logging.connect
def _json_logs(loglevel: str | int | None = None, **_: object) -> None:
    from worker.infra.logs import configure_logging

    configure_logging(loglevel)


@signals.worker_process_init.connect
def _freeze_startup_objects(**_: object) -> None:
    from worker.infra.gc_tuning import freeze_startup_objects

    freeze_startup_objects()


@signals.worker_process_init.connect
def _serve_metrics(**_: object) -> None:
    # Each prefork child has its own counters; child N serves them on WORKER_METRICS_PORT + N.
    port = get_settings().worker_metrics_port
    if not port:
        return
    from billiard.process import current_process
    from prometheus_client import start_http_server

    index = getattr(current_process(), "index", 0) or 0
    try:
        start_http_server(port + index, addr="0.0.0.0")  # noqa: S104 - scraped from outside
    except OSError as exc:
        logging.getLogger(__name__).warning("metrics port %s unavailable: %s", port + index, exc)


_app: Celery | None = None
_lock = threading.Lock()


def get_app() -> Celery:
    """The process's Celery app, built from the environment on first use."""
    global _app
    if _app is None:
        with _lock:
            if _app is None:
                _app = make_celery()
    return _app


def __getattr__(name: str) -> Any:
    # ``worker.infra.celery_app.app``: the same lazily built app (the shim and tasks use it).
    if name == "app":
        return get_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
