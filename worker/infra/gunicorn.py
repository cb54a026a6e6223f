"""gunicorn settings: ``gunicorn -c python:worker.gunicorn_conf`` (the Procfile and ``serve``).

- Each worker, once the app is loaded, moves everything allocated so far (modules, the app,
  SQLAlchemy's and pydantic's metadata) out of the garbage collector's sight: a full
  collection then scans only what requests allocate. Without it, an occasional full
  collection of a worker paused every request in it for about 75 ms (measured on a Flask test
  client loop: 1 per 5,000 requests, the slowest request by far).
- gunicorn answers a request line over ``limit_request_line`` itself, in HTML, before the app
  runs. The limit is raised to gunicorn's maximum and the app refuses lines over the old
  default (4094 bytes) with a JSON 414 (``webhooks.json_answers``).
- With PROMETHEUS_MULTIPROC_DIR set, each worker writes its samples there; a worker that exits
  must be marked dead so its live gauges stop counting.
"""

from __future__ import annotations

import os
from typing import Any

from worker.infra.gc_tuning import freeze_startup_objects

# gunicorn's maximum (0 would mean unlimited: a request line could then fill a worker's memory).
limit_request_line = 8190


def post_worker_init(worker: Any) -> None:
    freeze_startup_objects()


def child_exit(server: Any, worker: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
