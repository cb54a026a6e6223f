"""A private PgBouncer in transaction pooling mode, in front of the test PostgreSQL.

Debian's ``pgbouncer`` (1.18: no support for protocol-level prepared statements), on a spare
port, configured from a file in a temporary directory, stopped by PID. PgBouncer refuses to
run as root; as root it is started with ``-u postgres`` and logs to stderr (captured in the
directory), since the postgres user cannot open files under pytest's private tmp_path.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.processes import free_port, stop, wait_until

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
# Few server connections for many clients: connections are shared between clients at once,
# which is what exposes session state and server-side prepared statements.
POOL_SIZE = 4


def available() -> bool:
    return os.path.exists(PGBOUNCER)


def config(port: int, directory: Path, users: list[str], upstream_port: int = 5432) -> str:
    auth = directory / "users.txt"
    auth.write_text("".join(f'"{user}" ""\n' for user in users))
    return f"""\
[databases]
* = host=127.0.0.1 port={upstream_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {auth}
pool_mode = transaction
default_pool_size = {POOL_SIZE}
max_client_conn = 500
ignore_startup_parameters = extra_float_digits
"""


@contextmanager
def pgbouncer(directory: Path, users: list[str]) -> Iterator[int]:
    """A PgBouncer for the block; yields its port."""
    port = free_port()
    ini = directory / "pgbouncer.ini"
    ini.write_text(config(port, directory, users))
    args = [PGBOUNCER, *(["-u", "postgres"] if os.geteuid() == 0 else []), str(ini)]
    with (directory / "pgbouncer.log").open("ab") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(
                f"pgbouncer exited: {(directory / 'pgbouncer.log').read_text()[-2000:]}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            return False

    try:
        wait_until(up, timeout=20, what="pgbouncer")
        yield port
    finally:
        stop(proc)
