"""The after-commit publishing port: how the core asks for a task to be sent, without Celery.

``commit_hooks`` calls :func:`publish` after a commit for each outbox message written in it.
Whoever owns a broker installs a publisher (``tasks.publisher.install()``, called where the
Celery app is built, by ``create_app`` and by the CLI). Without one, nothing is sent: the
outbox sweeper (beat's ``dispatch-notifications``) delivers what no publish announced, so a
process without a broker loses nothing but a few seconds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

# (task name, positional args) -> whether it was sent. Never raises: a broker failure is the
# publisher's to log, and the sweeper's to recover from.
Publisher = Callable[[str, list[Any]], bool]


def _no_publisher(name: str, args: list[Any]) -> bool:
    log.debug("no publisher installed; %s %s is left to the sweeper", name, args)
    return False


_publisher: Publisher = _no_publisher


def set_publisher(publisher: Publisher | None) -> None:
    """Install ``publisher`` for this process; ``None`` restores the default (sends nothing)."""
    global _publisher
    _publisher = publisher or _no_publisher


def publish(name: str, args: list[Any]) -> bool:
    return _publisher(name, args)
