"""Concurrent debits through HTTP: several gunicorn workers, one wallet, exact results."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.support.processes import create_pg_database, drop_pg_database, gunicorn, process_env
from worker import ledger
from worker.config import Settings
from worker.infra import migrate
from worker.infra.db import get_engine, transaction

pytestmark = pytest.mark.slow

API_KEY = "concurrency-key-0123456789abcdefghijk"
DEBITS = 32
DEBIT = 100
FUNDED = 20 * DEBIT  # enough for 20 of the 32 debits


def test_32_concurrent_debits_on_one_wallet_are_exact(tmp_path) -> None:
    name, url = create_pg_database("bw_http_conc")
    settings = Settings(database_url=url)
    try:
        migrate.upgrade(settings)
        with transaction(settings) as s:
            customer, _ = ledger.create_customer(s, email="hot@example.com", name="Hot")
            ledger.post_entry(
                s, customer_id=customer.customer_id, currency="USD", amount=FUNDED, is_credit=True
            )
        env = process_env(DATABASE_URL=url, BILLING_API_KEY=API_KEY)
        # 4 processes x 4 threads: up to 16 requests in the ledger at once, across processes.
        with gunicorn(env, tmp_path, workers=4, extra=["--threads", "4"]) as base:
            statuses = _debit_concurrently(base, customer.customer_id)
        with transaction(settings) as s:
            wallet = ledger.get_wallet(s, customer.customer_id, "USD")
            entries = ledger.list_entries(s, customer.customer_id, page_size=100)
            report = ledger.verify(s)
    finally:
        get_engine(settings).dispose()
        drop_pg_database(name)

    assert sum(statuses.values()) == DEBITS
    assert set(statuses) <= {200, 400}, statuses
    assert statuses[200] == FUNDED // DEBIT
    assert statuses[400] == DEBITS - FUNDED // DEBIT
    assert wallet.balance == 0
    assert len(entries) == 1 + FUNDED // DEBIT
    assert report.ok, report.problems
    assert "Traceback" not in "".join(p.read_text() for p in tmp_path.glob("gunicorn-*.log"))


def _debit_concurrently(base: str, customer_id: str) -> Counter:
    start = threading.Barrier(DEBITS)
    headers = {"Authorization": f"Bearer {API_KEY}"}

    def debit(i: int) -> int:
        with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
            start.wait(timeout=30)
            r = client.post(
                f"/customers/{customer_id}/wallets/ledger-entries",
                json={
                    "amount": DEBIT,
                    "currency": "USD",
                    "entry_type": "debit",
                    "idempotency_key": f"debit-{i}",
                },
            )
            if r.status_code == 400:
                assert r.json()["code"] == "INSUFFICIENT_BALANCE"
            return r.status_code

    with ThreadPoolExecutor(DEBITS) as pool:
        return Counter(pool.map(debit, range(DEBITS)))
