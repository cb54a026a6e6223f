"""The web server: granian (a Rust HTTP server) serving the Flask app over WSGI.

``python -m worker.infra.web_server --bind HOST:PORT --workers N --threads T`` is the Procfile's
``web`` process and what ``billing-worker serve`` starts. It was chosen over gunicorn gthread by
an A/B in one run (``python -m benchmarks --only http``, docs/performance.md): under gunicorn
the server's own Python (request parsing, the poller, two writes per answer, the heartbeat)
took about half of a worker's CPU; granian does that work in Rust, outside the GIL.

- **Workers and threads.** ``--workers`` processes, each running the app on ``--threads``
  blocking threads. Each worker builds the app itself (``webhooks:serve_app``, a factory), so
  no database connection or Redis socket is shared across a fork.
- **Access log without credentials.** The format has the client address, the method, the path
  *without* its query string, the protocol, the status and the milliseconds: no query, no
  header (a Basic ``Authorization`` header would carry an API key), no Referer.
- **Graceful shutdown.** SIGTERM or SIGINT: the workers stop accepting, finish the requests in
  flight and exit; a worker still busy after ``GRACEFUL_TIMEOUT`` seconds is killed.
- **Over-long request lines** reach the app, which answers a JSON 414 past 4094 bytes
  (``webhooks.json_answers``); granian's own limit is its buffer size (about 400 KiB).

gunicorn stays installed and configured (``worker.infra.gunicorn``) for deployments that want it:
``gunicorn -c python:worker.gunicorn_conf 'webhooks:create_app()'``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

# Client address, time, method, path without query, protocol, status, milliseconds.
ACCESS_LOG_FORMAT = (
    '%(addr)s [%(time)s] "%(method)s %(path)s %(protocol)s" %(status)d %(dt_ms).1fms'
)
TARGET = "webhooks:serve_app"
GRACEFUL_TIMEOUT = 30


def parse_bind(bind: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) as (host, port)."""
    host, sep, port = bind.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--bind must be HOST:PORT, not {bind!r}")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104  (the operator's choice)


def build(
    bind: str,
    workers: int,
    threads: int,
    *,
    access_log: bool = True,
    graceful_timeout: int = GRACEFUL_TIMEOUT,
):  # type: ignore[no-untyped-def]
    """The configured server (not started): ``build(...).serve()`` runs it."""
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces

    host, port = parse_bind(bind)
    return Granian(
        TARGET,
        address=host,
        port=port,
        interface=Interfaces.WSGI,
        factory=True,
        workers=workers,
        blocking_threads=threads,
        # HTTP/1.1 with keep-alive, as gunicorn served; no websockets (the app has none).
        http=HTTPModes.http1,
        websockets=False,
        log_access=access_log,
        log_access_format=ACCESS_LOG_FORMAT,
        workers_kill_timeout=graceful_timeout,
        # A worker that dies (a segfault in a driver, the OOM killer) is replaced.
        respawn_failed_workers=True,
    )


def command_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m worker.infra.web_server")
    parser.add_argument("--bind", default=f"0.0.0.0:{os.environ.get('PORT', '8000')}")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--graceful-timeout", type=int, default=GRACEFUL_TIMEOUT)
    parser.add_argument("--no-access-log", action="store_true")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = command_args(argv)
    build(
        args.bind,
        args.workers,
        args.threads,
        access_log=not args.no_access_log,
        graceful_timeout=args.graceful_timeout,
    ).serve()


if __name__ == "__main__":
    main()
