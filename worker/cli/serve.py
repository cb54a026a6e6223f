"""``billing-worker serve``: the whole service (web, worker, beat) in one command.

For trying it out and small installs on the embedded default; production runs the Procfile's
processes separately.
"""

from __future__ import annotations

import os
import signal
import time

import click

from worker.infra import migrate
from worker.infra.processes import celery_command, spawn, stop_all, web_command


@click.command()
@click.option(
    "--port",
    type=int,
    default=lambda: int(os.environ.get("PORT", "8000")),
    show_default="$PORT or 8000",
)
@click.option("--host", default="127.0.0.1", show_default=True)
def serve(port: int, host: str) -> None:
    """Migrate, then run the web server (granian), a Celery worker and beat until interrupted."""
    migrate.upgrade()
    commands = {
        "web": web_command(f"{host}:{port}", workers=2, threads=4),
        "worker": celery_command(concurrency=2, extra=["--beat"]),
    }
    children = {name: spawn(cmd) for name, cmd in commands.items()}
    click.echo(f"billing-worker on http://{host}:{port} (web + worker + beat); Ctrl-C stops")
    stopping = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        while not stopping and all(c.poll() is None for c in children.values()):
            time.sleep(0.5)
    finally:
        stop_all(children.values(), timeout=15)
    failed = [n for n, c in children.items() if c.returncode not in (0, -15, None) and not stopping]
    if failed:
        raise click.ClickException(f"{', '.join(failed)} exited unexpectedly")
