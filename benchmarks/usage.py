"""Usage billing throughput: 100,000 events over 1,000 customers, end to end.

4 client processes (not this interpreter) post batches of 500 events to gunicorn; a Celery
worker bills them through Redis into PostgreSQL. Timed from the first POST until every wallet
shows its final balance. The reference is the same rows written by raw psycopg in this run:
multi-row INSERTs of the events, then per batch one UPDATE per wallet, a multi-row INSERT of
ledger entries and an UPDATE of the events' status.
"""

from __future__ import annotations

import multiprocessing
import time
from decimal import Decimal

import psycopg
from sqlalchemy import text

from benchmarks import services
from benchmarks.clients import USAGE_CUSTOMERS as CUSTOMERS
from benchmarks.clients import post_usage, usage_event
from benchmarks.common import Context, Row
from benchmarks.support import wait_until
from worker import ledger
from worker.config import Settings
from worker.infra.db import dispose_engines, transaction
from worker.ledger.schemas import USAGE_SCALE

BATCH = 500
CLIENTS = 4
CREDIT = 10**9


_event = usage_event


def _cost(i: int) -> Decimal:
    return Decimal("0.3") if i % 2 else Decimal("0.002") * (100 + i % 977)


def _setup(settings: Settings) -> None:
    with transaction(settings) as s:
        # The ledger refuses TRUNCATE (migration 0014) but for a superuser skipping triggers.
        s.execute(text("SET LOCAL session_replication_role = replica"))
        s.execute(text("TRUNCATE usage_events, ledger_entries, wallets, customers CASCADE"))
        for c in range(CUSTOMERS):
            cid = f"cus_b{c:04d}"
            ledger.create_customer(s, email=f"{cid}@bench.example", name=cid, customer_id=cid)
            ledger.post_entry(s, customer_id=cid, currency="USD", amount=CREDIT, is_credit=True)


def _expected(n: int) -> dict[str, tuple[int, int]]:
    totals: dict[str, Decimal] = {}
    for i in range(n):
        cid = f"cus_b{i % CUSTOMERS:04d}"
        totals[cid] = totals.get(cid, Decimal(0)) + _cost(i)
    return {cid: (CREDIT - int(t), int((t - int(t)) * USAGE_SCALE)) for cid, t in totals.items()}


def _raw_reference(dsn: str, n: int) -> float:
    """The same rows through raw psycopg: events/s for insert + per-wallet debit."""
    import json

    with psycopg.connect(dsn) as conn:
        for t in ("usage_events", "wallets", "ledger_entries"):
            conn.execute(f"DROP TABLE IF EXISTS raw_{t}")
            conn.execute(f"CREATE TABLE raw_{t} (LIKE {t} INCLUDING ALL)")
        conn.execute("INSERT INTO raw_wallets SELECT * FROM wallets")
        conn.commit()
        costs = {i: int(_cost(i) * USAGE_SCALE) for i in range(n)}
        started = time.perf_counter()
        cols = (
            "(event_id, customer_id, event_name, timestamp, metadata, status, currency, "
            "cost_scaled, unbilled_amount, received_at)"
        )
        for k in range(0, n, BATCH):
            rows, params = [], []
            for i in range(k, min(n, k + BATCH)):
                e = _event(i, "r")
                rows.append("(%s, %s, %s, now(), %s, 'pending', 'USD', %s, 0, now())")
                params += [
                    e["event_id"],
                    e["customer_id"],
                    e["event_name"],
                    json.dumps(e.get("metadata")),
                    costs[i],
                ]
            conn.execute(
                f"INSERT INTO raw_usage_events {cols} VALUES {', '.join(rows)} "
                "ON CONFLICT (event_id) DO NOTHING",
                params,
            )
            conn.commit()
        while True:
            batch = conn.execute(
                "SELECT seq, customer_id, cost_scaled FROM raw_usage_events WHERE status = "
                "'pending' ORDER BY seq LIMIT 5000 FOR UPDATE SKIP LOCKED"
            ).fetchall()
            if not batch:
                break
            per: dict[str, int] = {}
            for _, cid, cost in batch:
                per[cid] = per.get(cid, 0) + cost
            entries = []
            for cid in sorted(per):
                before, pending = conn.execute(
                    "SELECT balance, pending_usage_scaled FROM raw_wallets WHERE customer_id=%s "
                    "AND currency='USD' FOR UPDATE",
                    (cid,),
                ).fetchone()
                whole, rem = divmod(pending + per[cid], USAGE_SCALE)
                conn.execute(
                    "UPDATE raw_wallets SET balance = balance - %s, "
                    "pending_usage_scaled = %s WHERE customer_id=%s AND currency='USD'",
                    (whole, rem, cid),
                )
                entries.append((cid, whole, before))
            values = ", ".join(
                ["(%s, 'bus', %s, 'USD', %s, false, %s, %s, 'usage', 'fp', now())"] * len(entries)
            )
            params = []
            for j, (cid, whole, before) in enumerate(entries):
                params += [f"rawe{batch[0][0]}_{j}", cid, whole, before, before - whole]
            conn.execute(
                "INSERT INTO raw_ledger_entries (id, business_id, customer_id, currency,"
                " amount, is_credit, before_balance, after_balance, event_type, "
                f"fingerprint, created_at) VALUES {values}",
                params,
            )
            conn.execute(
                "UPDATE raw_usage_events SET status='processed', processed_at=now() "
                "WHERE seq = ANY(%s)",
                ([r[0] for r in batch],),
            )
            conn.commit()
        elapsed = time.perf_counter() - started
        for t in ("usage_events", "wallets", "ledger_entries"):
            conn.execute(f"DROP TABLE raw_{t}")
        conn.commit()
    return n / elapsed


def run(ctx: Context) -> list[Row]:
    n = 4_000 if ctx.quick else 50_000
    settings = Settings(database_url=ctx.database_url)
    _setup(settings)
    expected = _expected(n)
    base = services.shared(ctx)
    try:
        slices = [list(range(c, n, CLIENTS)) for c in range(CLIENTS)]
        ctx_mp = multiprocessing.get_context("spawn")
        start_at = time.time() + 1.5  # spawned clients start together
        procs = [
            ctx_mp.Process(target=post_usage, args=(base, sl, start_at, BATCH)) for sl in slices
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join(600)
            if p.exitcode != 0:
                raise RuntimeError(f"load client failed with {p.exitcode}")
        ingested = time.time()

        def done() -> bool:
            with psycopg.connect(ctx.pg_dsn) as conn:
                return (
                    conn.execute(
                        "SELECT count(*) FROM usage_events WHERE status = 'pending'"
                    ).fetchone()[0]
                    == 0
                )

        wait_until(done, timeout=900, interval=0.05, what="billing")
        finished = time.time()
    finally:
        dispose_engines()
    with psycopg.connect(ctx.pg_dsn) as conn:
        rows = conn.execute(
            "SELECT customer_id, balance, pending_usage_scaled FROM wallets WHERE currency = 'USD'"
        ).fetchall()
        entries = conn.execute(
            "SELECT count(*) FROM ledger_entries WHERE event_type='usage'"
        ).fetchone()[0]
    wrong = [r for r in rows if expected[r[0]] != (r[1], r[2])]
    if wrong:
        raise AssertionError(f"{len(wrong)} wallets differ from the exact expected balance")
    ingest_rate = n / (ingested - start_at)
    e2e_rate = n / (finished - start_at)
    ctx.references["raw_usage"] = _raw_reference(ctx.pg_dsn, n)
    note = f"{n} events, {CUSTOMERS} customers, {entries} usage entries, all balances exact"
    load = f"process pool ({CLIENTS} httpx clients, batches of {BATCH})"
    return [
        Row(
            "usage",
            "raw SQL batched insert + debit",
            ctx.references["raw_usage"],
            "events/s",
            note="reference: the same rows from one psycopg connection, multi-row statements",
            load="sql",
        ),
        Row(
            "usage",
            "ingest events/s",
            ingest_rate,
            "events/s",
            reference="raw_usage",
            ratio=ctx.ratio(ingest_rate, "raw_usage"),
            note=note,
            load=load,
        ),
        Row(
            "usage",
            "end-to-end events/s",
            e2e_rate,
            "events/s",
            goal=">= 10000",
            reference="raw_usage",
            ratio=ctx.ratio(e2e_rate, "raw_usage"),
            note=f"first POST until no event is pending; {services.describe()}",
            load=load,
        ),
    ]
