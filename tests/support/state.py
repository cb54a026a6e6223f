"""The process-wide state a test could leave behind, reset or restored in one place.

What a fresh interpreter has: the commit hooks not installed, no after-commit publisher, and
empty caches (settings from the environment, API-key principals, endpoint subscriptions, the
generated signing key, the dashboard's closed days; the
last two are keyed by database URL, and the PostgreSQL test database is one URL emptied
between tests, so a cached row would outlive its truncation).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from worker.access import apikeys, refused, signing
from worker.config import get_settings
from worker.ledger import dashboard_views
from worker.notify import commit_hooks, endpoints, publish


def _clear_caches() -> None:
    get_settings.cache_clear()
    apikeys._principals.clear()
    refused.forget_all()
    endpoints._subscriptions.clear()
    signing.forget()
    dashboard_views.forget_closed_days()


def reset_process_state() -> None:
    """Back to a fresh interpreter's state."""
    commit_hooks.uninstall()
    publish.set_publisher(None)
    _clear_caches()


@contextmanager
def preserved_process_state() -> Iterator[None]:
    """Whatever the body installs, caches or sets in os.environ is undone when it ends."""
    hooks, publisher, environ = commit_hooks._installed, publish._publisher, dict(os.environ)
    try:
        yield
    finally:
        if os.environ != environ:
            os.environ.clear()
            os.environ.update(environ)
        (commit_hooks.install if hooks else commit_hooks.uninstall)()
        publish.set_publisher(publisher)
        _clear_caches()
