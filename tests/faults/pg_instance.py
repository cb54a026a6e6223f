"""A private PostgreSQL server for fault tests that stop and restart the database.

The machine's shared server must never be restarted by a test; this one lives in a temporary
directory, listens on a spare port, and is owned by the ``postgres`` system user (initdb refuses
to run as root).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from tests.support.processes import free_port


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is not installed")
    return found[-1]


def _as_postgres(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


class PostgresInstance:
    """initdb + pg_ctl on a spare port; ``stop()``/``start()`` simulate an outage."""

    def __init__(self) -> None:
        # Its own directory directly under /tmp: pytest's tmp_path is private to root, and the
        # postgres user must be able to reach the data directory.
        self.root = Path(tempfile.mkdtemp(prefix="bw-pg-"))
        self.data = self.root / "pgdata"
        self.port = free_port()
        self.log = self.root / "postgres.log"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/billing"

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=billing"

    def init(self) -> PostgresInstance:
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        subprocess.run(
            _as_postgres(
                [
                    _bin("initdb"),
                    "-D",
                    str(self.data),
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "--no-sync",
                    "-E",
                    "UTF8",
                ]
            ),
            check=True,
            capture_output=True,
        )
        self.start()
        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True
        ) as conn:
            conn.execute("CREATE DATABASE billing")
        return self

    def start(self) -> None:
        subprocess.run(
            _as_postgres(
                [
                    _bin("pg_ctl"),
                    "-D",
                    str(self.data),
                    "-l",
                    str(self.log),
                    "-w",
                    "-o",
                    f"-p {self.port} -k /tmp -c listen_addresses=127.0.0.1 "
                    # fsync off: only the server process is ever crashed, never the OS, so the
                    # page cache keeps what was written. synchronous_commit stays ON: an
                    # acknowledged commit must survive an immediate (crash) stop.
                    "-c fsync=off -c max_connections=200",
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
        )

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(
            _as_postgres([_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"]),
            check=False,
            capture_output=True,
        )

    def is_up(self) -> bool:
        try:
            with psycopg.connect(self.dsn, connect_timeout=1):
                return True
        except psycopg.OperationalError:
            return False

    def destroy(self) -> None:
        self.stop("immediate")
        time.sleep(0.2)
        shutil.rmtree(self.root, ignore_errors=True)
