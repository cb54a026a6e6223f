"""gunicorn settings: ``gunicorn -c python:worker.gunicorn_conf`` (the Procfile and ``serve``).

- Each worker, once the app is loaded, moves everything allocated so far (modules, the app,
  SQLAlchemy's and pydantic's metadata) out of the garbage collector's sight: a full
  collection then scans only what requests allocate. Without it, an occasional full
  collection of a worker paused every request in it for about 75 ms (measured on a Flask test
  client loop: 1 per 5,000 requests, the slowest request by far).
- With PROMETHEUS_MULTIPROC_DIR set, each worker writes its samples there; a worker that exits
  must be marked dead so its live gauges stop counting.
"""

from __future__ import annotations

import os
from typing import Any

from worker.infra.gc_tuning import freeze_startup_objects


def post_worker_init(worker: Any) -> None:
    freeze_startup_objects()


def child_exit(server: Any, worker: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
