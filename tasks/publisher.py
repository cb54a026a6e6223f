"""The Celery publisher for the core's after-commit port (``worker.notify.publish``).

``install()`` is called where the Celery app is built (``make_celery``), by ``create_app`` and
by the CLI. The app is looked up only when a message is sent, so installing costs nothing and
a web process that never publishes never builds one.
"""

from __future__ import annotations

import logging
from typing import Any

from worker.notify import publish

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT = 2.0


def send(name: str, args: list[Any]) -> bool:
    """Send task ``name`` by name; a broker failure is logged and answered ``False``."""
    from worker.infra.celery_app import get_app

    try:
        get_app().send_task(
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


def install() -> None:
    """Publish after-commit messages through Celery in this process (idempotent)."""
    publish.set_publisher(send)
