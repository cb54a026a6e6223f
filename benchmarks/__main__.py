"""``python -m benchmarks [--quick] [--soak] [--json PATH] [--only MODULE ...]``

Creates a scratch PostgreSQL database and a private redis-server, migrates the database,
measures the raw-SQL references with pgbench, then runs every module in ``MODULES`` while
sampling the RSS of every web server and celery process they start, and prints one table with
the goal and the load generator next to each figure. ``--soak`` then runs the mixed soak load
(``benchmarks.soak``). A module that fails to import or run is reported as a FAILED row and
makes the exit status 1: nothing is skipped silently.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from contextlib import ExitStack
from datetime import UTC, datetime

# Only light imports at module level: spawned load clients re-import this module.
from benchmarks import memory
from benchmarks.common import Context, Row

# Each module exposes run(ctx) -> list[Row]. Add new areas here. The order matters: ledger
# and http use the wallets pgbench seeded; webhooks, usage and scan truncate the tables.
MODULES = [
    "benchmarks.ledger",
    "benchmarks.http",
    "benchmarks.charges",
    "benchmarks.webhooks",
    "benchmarks.usage",
    "benchmarks.scan",
]
# Run only when named with --only (not one of the rows; keeps a full run ~10 min).
OPT_IN = {"benchmarks.charges"}

PG_ADMIN_DSN = os.environ.get(
    "BENCH_PG_ADMIN_DSN", "host=127.0.0.1 port=5432 user=root dbname=postgres"
)


def _scratch_database(stack: ExitStack) -> tuple[str, str]:
    """A new PostgreSQL database, dropped on exit; returns (SQLAlchemy URL, libpq DSN)."""
    from benchmarks.support import create_pg_database, drop_pg_database

    name, url = create_pg_database("bw_bench")
    stack.callback(drop_pg_database, name)
    dsn = f"host=127.0.0.1 port=5432 user=root dbname={name}"
    return url, dsn


def _redis(stack: ExitStack, workdir: str) -> str:
    """A private redis-server when the binary exists (modules that need Celery use it)."""
    if os.environ.get("BENCH_REDIS_URL"):
        return os.environ["BENCH_REDIS_URL"]
    if not (shutil.which("redis-server") or os.path.exists("/usr/bin/redis-server")):
        return "redis://127.0.0.1:6379/15"
    from pathlib import Path

    from benchmarks.support import redis_server

    url, _proc = stack.enter_context(redis_server(Path(workdir)))
    return url


def format_table(rows: list[Row]) -> str:
    header = ("section", "name", "value", "unit", "ratio", "goal", "load generator", "note")
    lines = [
        (
            r.section,
            r.name,
            f"{r.value:,.1f}",
            r.unit,
            f"{r.ratio:.2f}x {r.reference}" if r.ratio is not None else "",
            r.goal,
            r.load,
            r.note,
        )
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines, strict=True)]

    def fmt(cells: tuple[str, ...]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([fmt(header), fmt(tuple("-" * w for w in widths)), *map(fmt, lines)])


def memory_rows(sampler: memory.Sampler) -> list[Row]:
    """Peak RSS of the web and worker processes over the whole run (not a soak)."""
    rows = []
    for group, label in (
        ("web", "web (server main process + workers)"),
        ("worker", "worker (celery)"),
    ):
        peak = sampler.peaks[group]
        if not peak.processes:  # the selected modules started no such process
            continue
        rows.append(
            Row(
                "memory",
                f"peak RSS {label}, largest process",
                peak.largest / 2**20,
                "MiB",
                goal="flat ±10% in --soak",
                note=f"all {group} processes together peaked at {peak.total / 2**20:.0f} MiB "
                f"({peak.processes} processes); {memory.SOURCE}, sampled every "
                f"{sampler.interval}s over the whole run",
            )
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short runs (a smoke check)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--only", nargs="*", metavar="MODULE", help="run only these modules")
    parser.add_argument(
        "--soak", action="store_true", help="also run the mixed soak load and check RSS is flat"
    )
    parser.add_argument(
        "--soak-seconds", type=float, default=600, help="soak duration (default 600)"
    )
    args = parser.parse_args(argv)
    wanted = set(args.only or [])
    modules = [m for m in MODULES if not wanted or wanted & {m, m.rsplit(".", 1)[-1]}]
    if not wanted:
        modules = [m for m in modules if m not in OPT_IN]

    from benchmarks import pgbench

    rows: list[Row] = []
    failed = False
    started = datetime.now(UTC)
    with ExitStack() as stack:
        # BENCH_KEEP_LOGS=1 keeps the work directory (web server/celery logs, wrk scripts).
        workdir = tempfile.mkdtemp(prefix="bw-bench-")
        if os.environ.get("BENCH_KEEP_LOGS"):
            print(f"work directory (kept): {workdir}")
        else:
            stack.callback(shutil.rmtree, workdir, True)
        url, dsn = _scratch_database(stack)

        from worker.config import Settings
        from worker.infra import migrate
        from worker.infra.db import dispose_engines

        migrate.upgrade(Settings(database_url=url))
        dispose_engines()
        stack.callback(dispose_engines)
        ctx = Context(
            quick=args.quick,
            database_url=url,
            pg_dsn=dsn,
            redis_url=_redis(stack, workdir),
            workdir=workdir,
            stack=stack,
        )
        print(f"scratch database ready; measuring raw references ({time.strftime('%X')})")
        try:
            rows += pgbench.run_references(ctx)
        except Exception:
            traceback.print_exc()
            rows.append(Row("raw sql (pgbench)", "references", 0, "", note="FAILED"))
            failed = True
        with memory.Sampler(interval=0.5) as sampler:
            for name in modules:
                print(f"running {name} ({time.strftime('%X')})", flush=True)
                try:
                    module_rows = importlib.import_module(name).run(ctx)
                except Exception as exc:
                    traceback.print_exc()
                    rows.append(Row(name, "module", 0, "", note=f"FAILED: {exc!r}"[:200]))
                    failed = True
                    continue
                for row in module_rows:
                    if row.reference and row.ratio is None:
                        row.ratio = ctx.ratio(row.value, row.reference)
                rows += module_rows
        rows += memory_rows(sampler)
        if args.soak:
            print(f"soak for {args.soak_seconds:.0f}s ({time.strftime('%X')})", flush=True)
            try:
                from benchmarks import soak

                rows += soak.run(ctx, args.soak_seconds)
            except Exception as exc:
                traceback.print_exc()
                rows.append(Row("soak", "soak", 0, "", note=f"FAILED: {exc!r}"[:200]))
                failed = True

    print()
    one, five, _ = os.getloadavg()
    print(
        f"{'quick' if args.quick else 'full'} run, {os.cpu_count()} CPUs, load average "
        f"{one:.2f} (1 min) {five:.2f} (5 min) at the end"
    )
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(
                {
                    "started": started.isoformat(),
                    "quick": args.quick,
                    "soak_seconds": args.soak_seconds if args.soak else None,
                    "load_average": os.getloadavg(),
                    "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                    "references": ctx.references,
                    "rows": [r.as_dict() for r in rows],
                },
                handle,
                indent=2,
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
