"""The whole service through PgBouncer in transaction pooling mode (DATABASE_POOLER=pgbouncer):
gunicorn and a Celery worker (two children, so inbox batches run in parallel) share four server
connections. Concurrent signed webhooks and API postings all succeed, every payment is credited
once. Without the setting, this is where `prepared statement "_pg3_0" does not exist` answered
500s (issue 18)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import make_url

from tests.support.processes import celery_worker, gunicorn, redis_server, stop
from tests.support.webhooks import (
    dodo_payment,
    migrated_pg_database,
    post_dodo,
    stack_env,
    wait_processed,
)
from worker import ledger
from worker.infra.db import transaction

pytestmark = pytest.mark.slow

API_KEY = "pgbouncer-e2e-key-0123456789abcdefghij"
CUSTOMERS = 12
PAYMENTS = 240


def test_webhooks_and_api_postings_through_pgbouncer(tmp_path, pgbouncer_port) -> None:
    with migrated_pg_database() as direct, redis_server(tmp_path) as (redis_url, _):
        url = make_url(direct.database_url).set(port=pgbouncer_port)
        pooled = direct.with_overrides(
            database_url=url.render_as_string(hide_password=False), database_pooler="pgbouncer"
        )
        env = stack_env(pooled, redis_url, DATABASE_POOLER="pgbouncer", BILLING_API_KEY=API_KEY)
        worker = celery_worker(env, tmp_path, concurrency=2)
        try:
            with gunicorn(env, tmp_path, workers=2) as base:
                payloads = [
                    dodo_payment(
                        payment_id=f"pay_pgb{n}",
                        customer_id=f"cus_pgb{n % CUSTOMERS}",
                        email=f"pgb{n % CUSTOMERS}@example.com",
                        total=100 + n,
                        wallet_credit=str(100 + n),
                    )
                    for n in range(PAYMENTS)
                ]
                with ThreadPoolExecutor(8) as pool:
                    statuses = [
                        r.status_code for r in pool.map(lambda p: post_dodo(base, p), payloads)
                    ]
                assert statuses == [200] * PAYMENTS
                wait_processed(direct, PAYMENTS, timeout=120)

                headers = {"Authorization": f"Bearer {API_KEY}"}

                def debit(n: int) -> int:
                    response = httpx.post(
                        f"{base}/customers/cus_pgb{n % CUSTOMERS}/wallets/ledger-entries",
                        json={"amount": 7, "currency": "USD", "entry_type": "debit"},
                        headers=headers,
                        timeout=15,
                    )
                    return response.status_code

                with ThreadPoolExecutor(8) as pool:
                    assert list(pool.map(debit, range(120))) == [200] * 120
        finally:
            stop(worker)
        with transaction(direct) as s:
            for c in range(CUSTOMERS):
                credited = sum(100 + n for n in range(PAYMENTS) if n % CUSTOMERS == c)
                debited = 7 * sum(1 for n in range(120) if n % CUSTOMERS == c)
                assert ledger.get_wallet(s, f"cus_pgb{c}", "USD").balance == credited - debited
        logs = "".join(p.read_text(errors="replace") for p in tmp_path.glob("*.log"))
        assert "prepared statement" not in logs
