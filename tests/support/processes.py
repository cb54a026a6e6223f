"""Real processes and databases for tests: PostgreSQL databases, redis-server, the web server
(granian as the Procfile runs it; gunicorn), Celery.

One implementation, shared with the benchmarks: the generic start/stop-by-PID functions are
product code (``worker.infra.processes``, used by ``billing-worker serve``), the scratch
components live in ``benchmarks.support`` (which may not import ``tests/``). This module only
gathers them under the name the tests use.
"""

from benchmarks.support import (
    PG_ADMIN_DSN,
    PG_URL_TEMPLATE,
    ROOT,
    celery_worker,
    create_pg_database,
    drop_pg_database,
    free_port,
    gunicorn,
    process_env,
    redis_server,
    spawn,
    wait_until,
    web_server,
)
from worker.infra.processes import stop, stop_all

__all__ = [
    "PG_ADMIN_DSN",
    "PG_URL_TEMPLATE",
    "ROOT",
    "celery_worker",
    "create_pg_database",
    "drop_pg_database",
    "free_port",
    "gunicorn",
    "process_env",
    "redis_server",
    "spawn",
    "stop",
    "stop_all",
    "wait_until",
    "web_server",
]
