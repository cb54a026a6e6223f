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
- Logs carry no credential and no query string. gunicorn's default access format has
  ``%(u)s`` (the user name of a Basic ``Authorization`` header, decoded: a client sending its
  API key that way puts the key there), ``%(r)s`` (the request line, query string included)
  and ``%(f)s`` (the Referer, another URL with a query). Ours logs the path alone. gunicorn's
  error log quotes a raw request line or URI when a request is malformed or a worker fails;
  ``RedactingLogger`` cuts the query out of those.
- The control socket (gunicorn 25.1+, on by default) is off: it lets whoever can reach the
  socket file change the worker count or stop the server, and nothing here uses it.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

from gunicorn.glogging import Logger

from worker.infra.gc_tuning import freeze_startup_objects

# gunicorn's maximum (0 would mean unlimited: a request line could then fill a worker's memory).
limit_request_line = 8190
# Client address, time, method, path without query, protocol, status, bytes, milliseconds,
# user agent.
access_log_format = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms "%(a)s"'
control_socket_disable = True
logger_class = "worker.infra.gunicorn.RedactingLogger"

_QUERY = re.compile(r"\?[^\s'\"]+")


def redact_queries(text: str) -> str:
    """``text`` with every query string (``?...`` up to a space or quote) replaced."""
    return _QUERY.sub("?<redacted>", text)


class _RedactQueries(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "?" in message:
            record.msg, record.args = redact_queries(message), ()
        return True


class RedactingLogger(Logger):
    """gunicorn's logger, with query strings cut out of its error log."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        self.error_log.addFilter(_RedactQueries())


def post_worker_init(worker: Any) -> None:
    freeze_startup_objects()


def child_exit(server: Any, worker: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
