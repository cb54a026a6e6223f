"""Wallet-first charges per second: ``worker.charges.charge`` against the same work in raw SQL.

Both run in a separate process pool (2 processes, one transaction per charge) on the scratch
PostgreSQL database, first spread over many wallets, then all on one hot wallet (where the
wallet row lock serialises them). The raw reference does what a charge must: insert the
charge row, lock the wallet, debit it, append the ledger entry, record the applied amount.

Run alone: ``python -m benchmarks --only charges [--quick]``.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime

from benchmarks.common import Context, Row

PROCESSES = 2

_RAW_CHARGE = [
    """INSERT INTO wallet_charges (charge_id, customer_id, currency, order_id, idempotency_key,
           requested_amount, applied_amount, reversed_amount, allow_partial, created_at)
       VALUES (%(charge_id)s, %(cid)s, 'USD', %(order)s, %(key)s, %(amount)s, 0, 0, true,
           %(now)s)""",
    "SELECT balance FROM wallets WHERE customer_id = %(cid)s AND currency = 'USD' FOR UPDATE",
]
_RAW_APPLY = [
    """UPDATE wallets SET balance = balance - %(applied)s, updated_at = %(now)s
       WHERE customer_id = %(cid)s AND currency = 'USD' AND balance >= %(applied)s""",
    """INSERT INTO ledger_entries (id, business_id, customer_id, currency, amount, is_credit,
           before_balance, after_balance, event_type, reference_object_id, idempotency_key,
           fingerprint, created_at)
       VALUES (%(entry_id)s, 'bus_local', %(cid)s, 'USD', %(applied)s, false, %(before)s,
           %(after)s, 'payment', %(order)s, %(entry_key)s, 'raw', %(now)s)""",
    """UPDATE wallet_charges SET applied_amount = %(applied)s, ledger_entry_id = %(entry_id)s
       WHERE charge_id = %(charge_id)s""",
]


def _core_worker(database_url: str, customers: list[str], count: int, tag: str) -> int:
    from worker import charges
    from worker.config import Settings
    from worker.infra.db import transaction

    settings = Settings(database_url=database_url)
    for i in range(count):
        with transaction(settings) as s:
            charges.charge(s, customers[i % len(customers)], 1, "USD", f"{tag}-{i}")
    return count


def _raw_worker(pg_dsn: str, customers: list[str], count: int, tag: str) -> int:
    import psycopg

    with psycopg.connect(pg_dsn) as conn:
        for i in range(count):
            now = datetime.now(UTC)
            p = {
                "cid": customers[i % len(customers)],
                "charge_id": f"wch_raw{uuid.uuid4().hex}",
                "entry_id": f"wle_raw{uuid.uuid4().hex}",
                "order": f"{tag}-{i}",
                "amount": 1,
                "now": now,
            }
            p["key"] = f"charge:{p['order']}"
            p["entry_key"] = f"charge:{p['charge_id']}"
            with conn.transaction():
                conn.execute(_RAW_CHARGE[0], p)
                balance = conn.execute(_RAW_CHARGE[1], p).fetchone()[0]
                p["applied"] = min(balance, p["amount"])
                p["before"], p["after"] = balance, balance - p["applied"]
                for statement in _RAW_APPLY:
                    conn.execute(statement, p)
    return count


def _setup(database_url: str, wallets: int, balance: int) -> list[str]:
    from worker import ledger
    from worker.config import Settings
    from worker.infra.db import transaction

    settings = Settings(database_url=database_url)
    ids = []
    with transaction(settings) as s:
        for _ in range(wallets):
            customer, _ = ledger.create_customer(
                s, email=f"bench-{uuid.uuid4().hex}@example.com", name="Bench"
            )
            ledger.post_entry(
                s, customer_id=customer.customer_id, currency="USD", amount=balance, is_credit=True
            )
            ids.append(customer.customer_id)
    return ids


def _rate(pool: ProcessPoolExecutor, fn, target: str, customers: list[str], per: int) -> float:
    tag = uuid.uuid4().hex[:8]
    started = time.perf_counter()
    futures = [pool.submit(fn, target, customers, per, f"{tag}-{p}") for p in range(PROCESSES)]
    done = sum(f.result(timeout=600) for f in futures)
    return done / (time.perf_counter() - started)


def run(ctx: Context) -> list[Row]:
    per = 100 if ctx.quick else 400
    spread = _setup(ctx.database_url, 200, 10**9)
    hot = _setup(ctx.database_url, 1, 10**9)
    rows = []
    with ProcessPoolExecutor(PROCESSES) as pool:
        # Warm both paths (imports, connections) before timing.
        _rate(pool, _core_worker, ctx.database_url, spread, 5)
        _rate(pool, _raw_worker, ctx.pg_dsn, spread, 5)
        for label, customers in (("spread", spread), ("one hot wallet", hot)):
            key = f"raw_charge_{'spread' if customers is spread else 'hot'}"
            ctx.references[key] = _rate(pool, _raw_worker, ctx.pg_dsn, customers, per)
            core = _rate(pool, _core_worker, ctx.database_url, customers, per)
            rows.append(
                Row(
                    section="charges",
                    name=f"raw SQL charges/s {label}",
                    value=round(ctx.references[key], 1),
                    unit="charges/s",
                    note="reference",
                    load=f"process pool ({PROCESSES})",
                )
            )
            rows.append(
                Row(
                    section="charges",
                    name=f"charge() charges/s {label}",
                    value=round(core, 1),
                    unit="charges/s",
                    goal=">= 0.3x raw",
                    reference=key,
                    ratio=ctx.ratio(core, key),
                    note=f"{PROCESSES} processes, one transaction per charge",
                    load=f"process pool ({PROCESSES})",
                )
            )
    return rows
