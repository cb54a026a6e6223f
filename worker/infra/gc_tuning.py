"""Keep the garbage collector's full collections short in long-running server processes."""

from __future__ import annotations

import gc


def freeze_startup_objects() -> None:
    """Collect once, then move every object alive now to the permanent generation.

    Called once per server process after start-up (a gunicorn worker once the app is loaded, a
    Celery child once forked). Those objects live as long as the process anyway; frozen, they
    are no longer traversed by each full collection, which otherwise pauses every thread of the
    process for tens of milliseconds. Never in tests or tools, which build many apps.
    """
    gc.collect()
    gc.freeze()
