"""gunicorn settings for multi-process metrics: ``gunicorn -c python:worker.gunicorn_conf``.

With PROMETHEUS_MULTIPROC_DIR set, each worker writes its samples there; a worker that exits
must be marked dead so its live gauges stop counting.
"""

from __future__ import annotations

import os
from typing import Any


def child_exit(server: Any, worker: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
