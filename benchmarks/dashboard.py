"""Every dashboard page, and the portal, on a customer with 100,000 ledger entries.

Setup, in SQL in the scratch database: 10,000 customers with a funded USD wallet, and one
customer, ``cus_dash_big``, with 100,000 entries over the last 90 days (credits of 2.00 and
debits of 1.00 in turn, the balance chain exact), a credit lot per credit (the last 25,000
still hold their 2.00, some expiring this week), so every panel has rows to read. Then a
2-worker gunicorn serves the app; a client signs in once and times each page, over one
keep-alive connection: the median of many requests after a warm-up. The reference next to
each page is its main query (the one that grows with the ledger) sent as raw SQL over psycopg
in the same run, median of as many runs.

Goal: every page under 100 ms (issue 17). Run alone: ``python -m benchmarks --only
dashboard [--quick]``.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg

from benchmarks.common import Context, Row
from benchmarks.support import gunicorn, process_env
from worker.access import portal
from worker.config import Settings

SECTION = "dashboard"
BIG = "cus_dash_big"
KEY = "bench-dashboard-key-0123456789abcdefghij"
TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')

LOAD_CUSTOMERS = """
INSERT INTO customers (customer_id, business_id, email, email_normalized, name, metadata,
                       created_at, created_by)
SELECT 'cus_dash_' || i, 'bus_local', 'd' || i || '@example.com', 'd' || i || '@example.com',
       'Dash customer ' || i, '{}'::json, now() - (i || ' seconds')::interval, 'bench'
FROM generate_series(1, %(others)s) AS i
UNION ALL
SELECT %(big)s, 'bus_local', 'big@example.com', 'big@example.com', 'Big Spender', '{}'::json, now(),
       'bench'
"""
LOAD_WALLETS = """
INSERT INTO wallets (customer_id, currency, balance, pending_usage_scaled, low_state,
                     created_at, updated_at)
SELECT customer_id, c.currency,
       CASE WHEN customer_id = %(big)s AND c.currency = 'USD' THEN %(big_balance)s
            WHEN customer_id = %(big)s THEN 0
            WHEN c.currency = 'USD' THEN 5000 ELSE 0 END,
       0, 'normal', now(), now()
FROM customers CROSS JOIN (VALUES ('USD'), ('INR')) AS c(currency)
"""
# Entry i (1..n): odd i a credit of 200, even i a debit of 100, so after entry i the balance
# is 100 * floor(i / 2) + (200 if i is odd) and the CHECKs on the chain hold.
LOAD_ENTRIES = """
INSERT INTO ledger_entries (id, business_id, customer_id, currency, amount, is_credit,
                            before_balance, after_balance, event_type, reason, key_scope,
                            fingerprint, created_at, actor)
SELECT 'wle_dash_' || i, 'bus_local', %(big)s, 'USD',
       CASE WHEN i %% 2 = 1 THEN 200 ELSE 100 END,
       i %% 2 = 1,
       CASE WHEN i %% 2 = 1 THEN 100 * (i / 2) ELSE 100 * (i / 2) + 100 END,
       CASE WHEN i %% 2 = 1 THEN 100 * (i / 2) + 200 ELSE 100 * (i / 2) END,
       CASE WHEN i %% 2 = 1 THEN 'payment' ELSE 'usage' END,
       CASE WHEN i %% 2 = 1 THEN 'top-up ' || i ELSE 'usage batch ' || i END,
       'client', repeat('0', 64),
       now() - ((%(n)s - i) * interval '90 days' / %(n)s),
       'bench'
FROM generate_series(1, %(n)s) AS i
"""
LOAD_LOTS = """
INSERT INTO credit_lots (id, customer_id, currency, entry_id, amount, remaining, expired,
                         category, expires_at, created_at)
SELECT 'lot_dash_' || i, %(big)s, 'USD', 'wle_dash_' || i, 200,
       CASE WHEN i > %(n)s - 2 * %(live)s THEN 200 ELSE 0 END, 0, 'paid',
       CASE WHEN i > %(n)s - 2 * %(live)s AND i %% 10 = 1
            THEN now() + ((i %% 30) || ' days')::interval END,
       now()
FROM generate_series(1, %(n)s, 2) AS i
"""

# The main query of each page, as raw SQL (what the page's core function sends, without the
# ORM): the one that reads the ledger for that page.
RAW = {
    "overview": """
        SELECT (created_at AT TIME ZONE 'UTC')::date AS day, currency,
               sum(amount) FILTER (WHERE is_credit), sum(amount) FILTER (WHERE NOT is_credit)
        FROM ledger_entries WHERE created_at >= now() - interval '30 days'
        GROUP BY 1, 2 ORDER BY 1, 2""",
    "customers": """
        SELECT * FROM customers
        WHERE email_normalized LIKE '%%spender%%' OR name ILIKE '%%spender%%'
        ORDER BY created_at DESC, customer_id DESC LIMIT 51""",
    "customer": """
        SELECT * FROM ledger_entries WHERE customer_id = %(big)s
        ORDER BY seq DESC LIMIT 51""",
    "customer filtered": """
        SELECT * FROM ledger_entries WHERE customer_id = %(big)s AND event_type = 'usage'
          AND created_at >= now() - interval '60 days' AND created_at < now() - interval '30 days'
        ORDER BY seq DESC LIMIT 51""",
    "customer deep page": """
        SELECT * FROM ledger_entries WHERE customer_id = %(big)s AND seq < %(deep)s
        ORDER BY seq DESC LIMIT 51""",
    "operations": "SELECT * FROM audit_log ORDER BY id DESC LIMIT 51",
    "portal": """
        SELECT (created_at AT TIME ZONE 'UTC')::date, currency, sum(amount)
        FROM ledger_entries WHERE customer_id = %(big)s AND NOT is_credit
          AND event_type <> 'expiration' AND created_at >= now() - interval '30 days'
        GROUP BY 1, 2 ORDER BY 1, 2""",
}


def _load(ctx: Context, n: int, others: int) -> tuple[float, int]:
    live = n // 4  # credit lots still holding 2.00: the wallet's balance / 200
    with psycopg.connect(ctx.pg_dsn, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")  # the ledger refuses TRUNCATE
        conn.execute(
            "TRUNCATE lot_consumptions, credit_lots, ledger_entries, wallets, customers, "
            "audit_log CASCADE"
        )
        conn.execute("SET session_replication_role = DEFAULT")
        started = time.perf_counter()
        params = {"big": BIG, "n": n, "others": others, "live": live, "big_balance": 100 * (n // 2)}
        for sql in (LOAD_CUSTOMERS, LOAD_WALLETS, LOAD_ENTRIES, LOAD_LOTS):
            conn.execute(sql, params)
        for table in ("customers", "wallets", "ledger_entries", "credit_lots"):
            conn.execute(f"ANALYZE {table}")
        deep = conn.execute(
            "SELECT seq FROM ledger_entries WHERE customer_id = %s ORDER BY seq LIMIT 1 OFFSET %s",
            (BIG, n // 2),
        ).fetchone()[0]
        remaining = conn.execute(
            "SELECT sum(remaining) FROM credit_lots WHERE customer_id = %s", (BIG,)
        ).fetchone()[0]
        assert remaining == params["big_balance"], (remaining, params["big_balance"])
    return time.perf_counter() - started, deep


def _median_ms(call: Callable[[], object], runs: int) -> float:
    for _ in range(3):
        call()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def _sign_in(client: httpx.Client) -> None:
    form = client.get("/dashboard/sign-in")
    token = TOKEN.search(form.text).group(1)
    r = client.post("/dashboard/sign-in", data={"csrf_token": token, "api_key": KEY})
    assert r.status_code == 303, r.text
    assert client.get("/dashboard").status_code == 200


def run(ctx: Context) -> list[Row]:
    n = 20_000 if ctx.quick else 100_000
    runs = 10 if ctx.quick else 40
    load_s, deep = _load(ctx, n, others=2_000 if ctx.quick else 10_000)
    settings = Settings(database_url=ctx.database_url, api_key=KEY)
    link = portal.create_link(settings, BIG)  # the generated key, stored in the database
    pages = {
        "overview": "/dashboard",
        "customers": "/dashboard/customers?q=spender",
        "customer": f"/dashboard/customers/{BIG}",
        "customer filtered": f"/dashboard/customers/{BIG}?event_type=usage&since="
        + time.strftime("%Y-%m-%d", time.gmtime(time.time() - 60 * 86400))
        + "&until="
        + time.strftime("%Y-%m-%d", time.gmtime(time.time() - 31 * 86400)),
        "customer deep page": f"/dashboard/customers/{BIG}?before={deep}",
        "operations": "/dashboard/operations",
        "portal": link.path,
    }
    raw: dict[str, float] = {}
    with psycopg.connect(ctx.pg_dsn, autocommit=True) as conn:
        for name, sql in RAW.items():
            raw[name] = _median_ms(
                lambda sql=sql: conn.execute(sql, {"big": BIG, "deep": deep}).fetchall(), runs
            )
    env = process_env(DATABASE_URL=ctx.database_url, BILLING_API_KEY=KEY)
    rows: list[Row] = []
    note = f"{n:,} entries" + (" (--quick: not 100,000)" if ctx.quick else "")
    with gunicorn(env, Path(ctx.workdir), workers=2) as base:
        with httpx.Client(base_url=base, timeout=30) as client:
            _sign_in(client)
            for name, path in pages.items():

                def get(path: str = path) -> None:
                    r = client.get(path)
                    assert r.status_code == 200, (path, r.status_code, r.text[:300])

                ms = _median_ms(get, runs)
                key = f"dash_raw_{name.replace(' ', '_')}_ms"
                ctx.references[key] = raw[name]
                rows.append(
                    Row(
                        SECTION,
                        f"page: {name}",
                        ms,
                        "ms",
                        goal="< 100 ms",
                        reference=key,
                        ratio=ms / raw[name] if raw[name] else None,
                        note=f"median of {runs}; {note}; raw main query {raw[name]:.2f} ms",
                        load="httpx, one connection",
                    )
                )
            started = time.perf_counter()
            export = client.get(f"/dashboard/customers/{BIG}/ledger.csv")
            export_s = time.perf_counter() - started
            assert export.status_code == 200 and export.text.count("\n") == n + 1
    rows.append(
        Row(
            SECTION,
            "CSV export of the whole ledger",
            export_s * 1000,
            "ms",
            note=f"{n:,} rows streamed, one request (a download, not a page)",
            load="httpx",
        )
    )
    rows.insert(0, Row(SECTION, "load (generate_series)", load_s, "s", note=note, load="sql"))
    return rows
