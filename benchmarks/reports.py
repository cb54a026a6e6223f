"""Reports on a large generated ledger: the service's query functions (``worker.reports``)
timed against the raw SQL aggregate each one stands for, in the same run and database, and
the web process's memory while it streams a large export.

Setup, not posting: a scratch database of its own is filled with ``generate_series`` (one
customer with ``BIG`` entries over 30 days, a 10,000-entry customer, and ``WALLETS`` wallets
of 1,000 entries each over a year; full run 10,000,000 entries in all), each wallet's
``before``/``after`` chain consistent. Its plain indexes are dropped for the load and built
again after it, then the tables are VACUUM ANALYZEd (what autovacuum does to an insert-only
table), so index-only scans find their pages all-visible.

Rows: each query's median over ``REPEAT`` warm runs, ms, with the raw SQL's median as the
ratio's reference; the same service queries once with migration 0016's indexes dropped (in a
rolled-back transaction), to show what the indexes buy; and the gunicorn worker's peak RSS
while streaming the 10,000-entry and the 1,000,000-entry exports over HTTP.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg

from benchmarks import memory
from benchmarks.common import Context, Row
from benchmarks.services import web, workdir
from benchmarks.support import create_pg_database, drop_pg_database, process_env

BIG = "cus_bench_big"
MID = "cus_bench_mid"
MID_ENTRIES = 10_000
REPEAT = 5
TZ = "America/New_York"
NEW_INDEXES = ("ix_ledger_entries_wallet_created", "ix_ledger_entries_created")
API_KEY = "bench-reports-key-0123456789abcdefghijklmnop"

# One wallet's entry i: +300, -100, -100, repeated (so the balance never goes below 0), with
# event types spread so that group_by has something to split.
_ENTRY = """
INSERT INTO ledger_entries (id, business_id, customer_id, currency, amount, is_credit,
    before_balance, after_balance, event_type, reason, key_scope, fingerprint, created_at, actor)
SELECT 'wle_' || %(tag)s || w || '_' || i, 'bus_bench',
       CASE WHEN %(single)s THEN %(prefix)s ELSE %(prefix)s || w END, 'USD',
       CASE WHEN i %% 3 = 0 THEN 300 ELSE 100 END,
       i %% 3 = 0,
       100 * (i / 3) + CASE i %% 3 WHEN 0 THEN 0 WHEN 1 THEN 300 ELSE 200 END,
       100 * (i / 3) + CASE i %% 3 WHEN 0 THEN 300 WHEN 1 THEN 200 ELSE 100 END,
       CASE WHEN i %% 6 = 0 THEN 'payment'
            WHEN i %% 3 = 0 OR i %% 5 = 0 THEN 'merchant_adjustment' ELSE 'usage' END,
       CASE WHEN i %% 7 = 0 THEN 'plan fee' ELSE NULL END,
       'client', 'bench',
       %(t0)s::timestamptz + (i * %(step)s::float8 + w) * interval '1 second', 'bench'
FROM generate_series(0, %(n)s - 1) AS i, generate_series(%(w0)s, %(w1)s - 1) AS w
"""


def _final(n: int) -> int:
    """The balance after a wallet's ``n`` generated entries (the last one's after_balance)."""
    i = n - 1
    return 100 * (i // 3) + (300, 200, 100)[i % 3]


def _generate(dsn: str, wallets: int, big: int, now: datetime) -> dict[str, float]:
    year, month = now - timedelta(days=365), now - timedelta(days=30)
    started = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        plain = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'ledger_entries' "
            "AND indexname LIKE 'ix_%%'"
        ).fetchall()
        for name, _ in plain:
            conn.execute(f"DROP INDEX {name}")
        with conn.transaction():
            # Setup only: skip the per-row foreign-key checks of the bulk load.
            conn.execute("SET LOCAL session_replication_role = replica")
            conn.execute(
                "INSERT INTO customers (customer_id, business_id, email, email_normalized, name,"
                " metadata, created_at) SELECT c, 'bus_bench', c || '@bench', c || '@bench', c,"
                " '{}', now() FROM (SELECT 'cus_bench_' || g AS c FROM generate_series(0, %s - 1) g"
                " UNION ALL SELECT %s UNION ALL SELECT %s) x",
                (wallets, BIG, MID),
            )
            for tag, prefix, single, n, count, t0, seconds in (
                ("bg", "cus_bench_", False, 1000, wallets, year, 365 * 86400),
                ("mid", MID, True, MID_ENTRIES, 1, month, 30 * 86400),
                ("big", BIG, True, big, 1, month, 30 * 86400),
            ):
                conn.execute(
                    _ENTRY,
                    {
                        "tag": tag,
                        "prefix": prefix,
                        "single": single,
                        "n": n,
                        "w0": 0,
                        "w1": count,
                        "t0": t0,
                        "step": seconds / n,
                    },
                )
            conn.execute(
                "INSERT INTO wallets (customer_id, currency, balance, created_at, updated_at)"
                " SELECT customer_id, 'USD', CASE customer_id WHEN %s THEN %s WHEN %s THEN %s"
                " ELSE %s END, now(), now() FROM customers",
                (BIG, _final(big), MID, _final(MID_ENTRIES), _final(1000)),
            )
        loaded = time.perf_counter() - started
        for _, definition in plain:
            conn.execute(definition)
        indexed = time.perf_counter() - started - loaded
        conn.execute("VACUUM ANALYZE ledger_entries")
        conn.execute("VACUUM ANALYZE wallets")
        total = conn.execute("SELECT count(*) FROM ledger_entries").fetchone()[0]
    return {"load_s": loaded, "index_s": indexed, "entries": total}


def _median_ms(fn: Callable[[], Any], repeat: int = REPEAT) -> float:
    fn()  # warm
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def run(ctx: Context) -> list[Row]:
    from worker.config import Settings
    from worker.infra import migrate
    from worker.infra.db import dispose_engines, transaction
    from worker.reports import analytics, balances, periods, statements, summary

    wallets = 900 if ctx.quick else 9_000
    big = 100_000 if ctx.quick else 1_000_000
    name, url = create_pg_database("bw_bench_reports")
    ctx.stack.callback(drop_pg_database, name)
    dsn = f"host=127.0.0.1 port=5432 user=root dbname={name}"
    settings = Settings(database_url=url, wallet_currencies=("USD",))
    migrate.upgrade(settings)
    dispose_engines()
    now = datetime.now(UTC).replace(microsecond=0)
    print(f"  generating {wallets * 1000 + big + MID_ENTRIES:,} entries", flush=True)
    made = _generate(dsn, wallets, big, now)
    print(f"  generated in {made['load_s']:.0f}s, indexed in {made['index_s']:.0f}s", flush=True)
    total = int(made["entries"])
    month = periods.period(now - timedelta(days=30), now, TZ)
    middle = now - timedelta(days=15)

    def service(fn: Callable[[Any], Any]) -> Callable[[], Any]:
        def call() -> Any:
            with transaction(settings) as s:
                return fn(s)

        return call

    services = {
        "analytics": service(lambda s: analytics.analytics(s, BIG, "USD", month, "day")),
        "analytics_event_type": service(
            lambda s: analytics.analytics(s, BIG, "USD", month, "day", "event_type")
        ),
        "statement": service(lambda s: statements.statement(s, BIG, "USD", month)),
        "balance": service(lambda s: balances.balance_at(s, BIG, "USD", middle)),
        "summary": service(lambda s: summary.summary(s, month)),
    }
    raw_sql = {
        "analytics": (
            "SELECT date_trunc('day', created_at AT TIME ZONE %(tz)s) AS d,"
            " sum(CASE WHEN is_credit THEN amount ELSE 0 END),"
            " sum(CASE WHEN is_credit THEN 0 ELSE amount END), count(*) FROM ledger_entries"
            " WHERE customer_id = %(c)s AND currency = 'USD' AND created_at >= %(s)s"
            " AND created_at < %(e)s GROUP BY d"
        ),
        "analytics_event_type": (
            "SELECT date_trunc('day', created_at AT TIME ZONE %(tz)s) AS d, event_type,"
            " sum(CASE WHEN is_credit THEN amount ELSE 0 END),"
            " sum(CASE WHEN is_credit THEN 0 ELSE amount END), count(*) FROM ledger_entries"
            " WHERE customer_id = %(c)s AND currency = 'USD' AND created_at >= %(s)s"
            " AND created_at < %(e)s GROUP BY d, event_type"
        ),
        "statement": (
            "SELECT sum(CASE WHEN is_credit THEN amount ELSE 0 END),"
            " sum(CASE WHEN is_credit THEN 0 ELSE amount END), count(*) FROM ledger_entries"
            " WHERE customer_id = %(c)s AND currency = 'USD' AND created_at >= %(s)s"
            " AND created_at < %(e)s"
        ),
        "balance": (
            "SELECT after_balance FROM ledger_entries WHERE customer_id = %(c)s"
            " AND currency = 'USD' AND created_at <= %(m)s ORDER BY created_at DESC LIMIT 1"
        ),
        "summary": (
            "SELECT currency, is_credit, event_type, sum(amount), count(*) FROM ledger_entries"
            " WHERE created_at >= %(s)s AND created_at < %(e)s GROUP BY 1, 2, 3"
        ),
    }
    params = {"tz": TZ, "c": BIG, "s": month.start, "e": month.end, "m": middle}
    rows: list[Row] = []
    with psycopg.connect(dsn, autocommit=True) as conn:

        def raw(sql: str) -> Callable[[], Any]:
            return lambda: conn.execute(sql, params).fetchall()

        labels = {
            "analytics": f"30-day daily analytics ({TZ}), one customer of {big:,} entries",
            "analytics_event_type": "the same, group_by=event_type",
            "statement": "30-day statement (opening, closing, totals, first page)",
            "balance": "balance at a moment (mid-period)",
            "summary": f"business summary, 30 days of a {total:,}-entry ledger",
        }
        for key, fn in services.items():
            ref = f"raw_reports_{key}"
            ctx.references[ref] = _median_ms(raw(raw_sql[key]))
            ms = _median_ms(fn)
            rows.append(
                Row(
                    "reports",
                    labels[key],
                    ms,
                    "ms",
                    goal="well under 1000 ms",
                    reference=ref,
                    load="sql",
                    note=f"raw SQL {ctx.references[ref]:.1f} ms (median of {REPEAT})",
                )
            )
        # What the indexes buy: the service's queries once each without migration 0016's.
        with conn.transaction(force_rollback=True):
            for index in NEW_INDEXES:
                conn.execute(f"DROP INDEX {index}")
            for key in ("analytics", "summary"):
                t = time.perf_counter()
                conn.execute(raw_sql[key], params).fetchall()
                ms = (time.perf_counter() - t) * 1000
                rows.append(
                    Row(
                        "reports",
                        f"raw {key} without the 0016 indexes (one run)",
                        ms,
                        "ms",
                        load="sql",
                        note="indexes dropped in a rolled-back transaction",
                    )
                )
    dispose_engines()
    rows += _export_memory(ctx, url, big)
    return rows


def _export_memory(ctx: Context, url: str, big: int) -> list[Row]:
    """The gunicorn worker's RSS while it streams the 10,000- and the big export."""
    where = workdir(ctx, "reports")
    environment = process_env(
        DATABASE_URL=url,
        CELERY_BROKER_URL=ctx.redis_url,
        BILLING_API_KEY=API_KEY,
        WALLET_CURRENCIES="USD",
    )
    rows = []
    with web(environment, where, workers=1, threads=4) as base:
        peaks = {}
        for customer, entries in ((MID, MID_ENTRIES), (BIG, big)):
            peak, size, seconds, lines = _stream_sampled(base, customer)
            peaks[entries] = peak
            rows.append(
                Row(
                    "reports",
                    f"export of {entries:,} entries over HTTP: web worker peak RSS",
                    peak / 2**20,
                    "MiB",
                    goal="flat: same for 10,000 and 1,000,000 rows",
                    load="httpx stream",
                    note=f"{lines - 1:,} rows, {size / 2**20:.0f} MiB of CSV in {seconds:.1f}s "
                    f"({(lines - 1) / seconds:,.0f} rows/s); RSS via {memory.SOURCE} every 0.1 s",
                )
            )
        small, large = peaks[MID_ENTRIES], peaks[big]
        rows.append(
            Row(
                "reports",
                f"export RSS growth {big:,} vs {MID_ENTRIES:,} rows",
                (large - small) / 2**20,
                "MiB",
                goal="~0 (constant memory)",
                load="httpx stream",
                note=f"peak ratio {large / small:.3f}",
            )
        )
    return rows


def _stream_sampled(base: str, customer: str) -> tuple[int, int, float, int]:
    """(peak RSS of the largest gunicorn process, bytes, seconds, lines) of one export."""
    stop = threading.Event()
    peak = [0]

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], max(memory.snapshot()["web"], default=0))
            stop.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    size = lines = 0
    started = time.perf_counter()
    try:
        with httpx.stream(
            "GET",
            f"{base}/customers/{customer}/wallets/ledger-entries/export",
            headers={"Authorization": f"Bearer {API_KEY}"},
            timeout=600,
        ) as response:
            response.raise_for_status()
            for chunk in response.iter_bytes():
                size += len(chunk)
                lines += chunk.count(b"\n")
    finally:
        stop.set()
        sampler.join()
    return peak[0], size, time.perf_counter() - started, lines
