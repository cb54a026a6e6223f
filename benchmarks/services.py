"""Shared process and load-generator plumbing: the web server, celery and wrk, started one way.

The services are the real ones (``benchmarks.support`` starts them with this checkout on
PYTHONPATH); every benchmark gets the run's private redis-server through ``ctx.redis_url``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks.clients import API_KEY, WEBHOOK_SECRET
from benchmarks.common import Context
from benchmarks.support import USAGE_PRICING_TOML as PRICING
from benchmarks.support import celery_worker, gunicorn, process_env, tcp_rows, web_server
from worker.infra.processes import stop

# The one web server and Celery worker every HTTP benchmark shares (started once per run).
# The Procfile's defaults (WEB_CONCURRENCY, WEB_THREADS): the goals are judged with them.
WEB_WORKERS = 2
WEB_THREADS = 4
CELERY_CONCURRENCY = 2

# The servers the A/B compares (benchmarks.http); SERVER is the Procfile's, which every other
# module uses. gunicorn runs gthread: it keeps connections alive (sync closes each one and
# lingers for the client's FIN) and measured ~40% more req/s than sync workers here.
SERVER = "granian"
SERVERS = ("gunicorn", "granian")
GTHREAD = ["--worker-class", "gthread", "--threads"]


def workdir(ctx: Context, name: str) -> Path:
    path = Path(ctx.workdir) / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def env(ctx: Context, **overrides: str) -> dict[str, str]:
    """The service environment: the scratch database, the private broker, plus overrides."""
    return process_env(DATABASE_URL=ctx.database_url, CELERY_BROKER_URL=ctx.redis_url, **overrides)


@contextmanager
def web(
    environment: dict[str, str],
    where: Path,
    workers: int = 2,
    threads: int = 2,
    server: str = SERVER,
) -> Iterator[str]:
    """The web server (``SERVER`` unless told: ``granian`` or ``gunicorn`` gthread); yields
    the base URL."""
    if server == "gunicorn":
        with gunicorn(environment, where, workers, extra=[*GTHREAD, str(threads)]) as base:
            yield base
    else:
        with web_server(environment, where, workers, threads, extra=["--no-access-log"]) as base:
            yield base


@contextmanager
def celery(environment: dict[str, str], where: Path, concurrency: int = 2) -> Iterator[None]:
    """A Celery worker for the block (stopped with SIGTERM, then killed if it lingers)."""
    proc = celery_worker(environment, where, concurrency, extra=["--loglevel", "WARNING"])
    try:
        yield
    finally:
        stop(proc)


def wrk(
    base: str,
    script: Path,
    seconds: float,
    connections: int,
    threads: int = 2,
    script_args: tuple[str, ...] = (),
    during: Callable[[], object] | None = None,
) -> dict[str, float]:
    """Run ``wrk --latency`` with a Lua script; returns requests, rps, p50/p99 (ms), errors.
    ``during`` is called once, halfway through."""
    binary = shutil.which("wrk")
    if binary is None:
        raise RuntimeError("wrk is not installed (apt-get install -y wrk)")
    args = [binary, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s"]
    args += ["--latency", "-s", str(script), base]
    if script_args:
        args += ["--", *script_args]
    with subprocess.Popen(args, stdout=subprocess.PIPE, text=True) as proc:
        if during is not None:
            time.sleep(max(0.5, seconds / 2))
            during()
        output, _ = proc.communicate(timeout=seconds + 60)
    if proc.returncode:
        raise RuntimeError(f"wrk exited with {proc.returncode}:\n{output}")
    total = re.search(r"(\d+) requests in ([\d.]+)(\w+)", output)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if total is None:
        raise RuntimeError(f"cannot read wrk output:\n{output}")
    return {
        "requests": int(total.group(1)),
        "seconds": _ms(total.group(2) + total.group(3)) / 1000,
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "p50": _ms(re.search(r"^\s+50%\s+(\S+)", output, re.M).group(1)),
        "p99": _ms(re.search(r"^\s+99%\s+(\S+)", output, re.M).group(1)),
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "errors": sum(int(g) for g in socket.groups()) if socket else 0,
    }


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def service_env(ctx: Context) -> dict[str, str]:
    """The environment of the run's web server and Celery worker."""
    where = workdir(ctx, "services")
    pricing = where / "pricing.toml"
    pricing.write_text(PRICING)
    return env(
        ctx,
        BILLING_API_KEY=API_KEY,
        DODO_WEBHOOK_SECRET=WEBHOOK_SECRET,
        PRICING_FILE=str(pricing),
        INBOX_SWEEP_SECONDS="30",
    )


def shared(ctx: Context) -> str:
    """The run's web server (SERVER, WEB_WORKERS workers x WEB_THREADS) and Celery worker,
    started on first use with every setting the benchmarks need and stopped at the end of the
    run; returns the base URL. One start-up per run instead of one per module."""
    if "base" not in ctx.shared:
        where = workdir(ctx, "services")
        environment = service_env(ctx)
        ctx.stack.enter_context(celery(environment, where, CELERY_CONCURRENCY))
        base = ctx.stack.enter_context(web(environment, where, WEB_WORKERS, WEB_THREADS))
        ctx.shared["base"] = base
    return ctx.shared["base"]


def describe(server: str = SERVER) -> str:
    kind = "gunicorn gthread" if server == "gunicorn" else server
    return (
        f"{kind} {WEB_WORKERS} workers x{WEB_THREADS} threads, "
        f"Celery concurrency {CELERY_CONCURRENCY}"
    )


# -- which worker holds which connection (Linux /proc) -----------------------------------------


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(parent, []).append(int(entry.name))
    return tree


def worker_pids(port: str | int) -> list[int]:
    """The worker processes of the web server listening on ``port``: every descendant of the
    process whose command line names the port (multiprocessing's helpers left out)."""
    tree = _children()
    parent_of = {child: parent for parent, kids in tree.items() for child in kids}
    named = {pid for pid in parent_of if re.search(rf"(:|--port\s+){port}\b", _cmdline(pid))}
    roots = [pid for pid in named if parent_of[pid] not in named]
    workers: list[int] = []
    todo = [child for root in roots for child in tree.get(root, [])]
    while todo:
        pid = todo.pop()
        if "resource_tracker" not in _cmdline(pid):
            workers.append(pid)
        todo += tree.get(pid, [])
    return sorted(workers)


def connections_per_worker(port: str | int) -> dict[int, int]:
    """Established client connections on ``port`` held by each worker process (pid -> count)."""
    inodes = {fields[9] for fields in tcp_rows(int(port)) if fields[3] == "01"}
    held: dict[int, int] = {}
    for pid in worker_pids(port):
        count = 0
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            fds = []
        for fd in fds:
            try:
                link = os.readlink(fd)
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in inodes:
                count += 1
        held[pid] = count
    return held
