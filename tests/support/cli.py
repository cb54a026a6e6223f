"""The ``billing-worker`` CLI run against a given database: in this process, or as a real one."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from typing import NamedTuple

from tests.support.processes import ROOT, process_env
from worker.cli import main
from worker.config import get_settings


class CliResult(NamedTuple):
    code: int
    out: str
    err: str

    def json(self):  # type: ignore[no-untyped-def]
        return json.loads(self.out)


@contextmanager
def _database(url: str) -> Iterator[None]:
    """DATABASE_URL set to ``url`` (and the settings cache empty) for the duration only."""
    previous = os.environ.get("DATABASE_URL")
    os.environ["DATABASE_URL"] = url
    get_settings.cache_clear()
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("DATABASE_URL", None)
        else:
            os.environ["DATABASE_URL"] = previous
        get_settings.cache_clear()


def run_cli(database_url: str, *args: str) -> CliResult:
    """The console-script entry point (``worker.cli.main``, so its error formatting too) in
    this process: exit status, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with _database(database_url), redirect_stdout(out), redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code
        else:  # pragma: no cover - main always exits
            code = 0
    return CliResult(int(code or 0), out.getvalue(), err.getvalue())


def run_cli_process(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m worker *args`` as a real process (what a user sees, tracebacks included)."""
    return subprocess.run(
        [sys.executable, "-m", "worker", *args],
        env=process_env(DATABASE_URL=database_url),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
