"""End to end: signed webhook -> the web server -> inbox -> real Celery worker (private Redis)
-> wallet credited exactly once."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest

from tests.support.processes import celery_worker, redis_server, stop, web_server
from tests.support.webhooks import (
    dodo_headers,
    dodo_payment,
    dodo_refund,
    dumps,
    migrated_pg_database,
    post_dodo,
    stack_env,
    status_counts,
    wait_processed,
)
from worker import ledger
from worker.config import Settings
from worker.infra.db import transaction

pytestmark = pytest.mark.slow


@dataclass
class Stack:
    base: str
    settings: Settings


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """PostgreSQL, a private redis-server, the web server and a Celery worker, for this module."""
    tmp = tmp_path_factory.mktemp("webhooks-e2e")
    with migrated_pg_database() as settings, redis_server(tmp) as (redis_url, _):
        env = stack_env(settings, redis_url)
        worker = celery_worker(env, tmp, concurrency=2)
        try:
            with web_server(env, tmp, workers=2) as base:
                yield Stack(base, settings)
        finally:
            stop(worker)


def _customer() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:10]
    return f"cus_{tag}", f"{tag}@example.com"


def _balance(settings: Settings, customer_id: str, currency: str = "USD") -> int:
    with transaction(settings) as s:
        return ledger.get_wallet(s, customer_id, currency).balance


def _entries(settings: Settings, customer_id: str) -> int:
    with transaction(settings) as s:
        return len(ledger.list_entries(s, customer_id, page_size=100))


def test_signed_dodo_payment_credits_wallet_once(stack: Stack) -> None:
    customer_id, email = _customer()
    payload = dodo_payment(customer_id=customer_id, email=email)
    body = dumps(payload)
    headers = dodo_headers(body)
    first = httpx.post(stack.base + "/webhooks/dodo", content=body, headers=headers, timeout=15)
    assert first.status_code == 200
    wait_processed(stack.settings, sum(status_counts(stack.settings).values()))
    again = httpx.post(stack.base + "/webhooks/dodo", content=body, headers=headers, timeout=15)
    assert again.json()["duplicate"] is True
    assert _balance(stack.settings, customer_id) == 2000
    assert _entries(stack.settings, customer_id) == 1


def test_same_delivery_fifty_times_concurrently_credits_once(stack: Stack) -> None:
    customer_id, email = _customer()
    body = dumps(dodo_payment(customer_id=customer_id, email=email, wallet_credit=777))
    headers = dodo_headers(body)

    def deliver(_: int) -> httpx.Response:
        return httpx.post(stack.base + "/webhooks/dodo", content=body, headers=headers, timeout=30)

    with ThreadPoolExecutor(max_workers=50) as pool:
        responses = list(pool.map(deliver, range(50)))
    assert {r.status_code for r in responses} == {200}
    assert sum(not r.json()["duplicate"] for r in responses) == 1
    wait_processed(stack.settings, sum(status_counts(stack.settings).values()))
    assert _balance(stack.settings, customer_id) == 777
    assert _entries(stack.settings, customer_id) == 1


def test_refund_before_payment_both_apply_once_payment_arrives(stack: Stack) -> None:
    customer_id, email = _customer()
    payment_id = "pay_" + uuid.uuid4().hex[:12]
    refund = dodo_refund(payment_id, 500)
    refund["data"]["customer"].update(customer_id=customer_id, email=email)
    assert post_dodo(stack.base, refund).status_code == 200
    payment = dodo_payment(payment_id=payment_id, customer_id=customer_id, email=email)
    assert post_dodo(stack.base, payment).status_code == 200
    # The refund task retries with backoff (1 s, 2 s, ...) until its payment is applied.
    wait_processed(stack.settings, sum(status_counts(stack.settings).values()), timeout=60)
    assert _balance(stack.settings, customer_id) == 1500
    assert _entries(stack.settings, customer_id) == 2


def test_partial_refunds_past_the_payment_are_capped(stack: Stack) -> None:
    customer_id, email = _customer()
    payment_id = "pay_" + uuid.uuid4().hex[:12]
    payment = dodo_payment(payment_id=payment_id, customer_id=customer_id, email=email)
    assert post_dodo(stack.base, payment).status_code == 200
    wait_processed(stack.settings, sum(status_counts(stack.settings).values()))
    for _ in range(3):
        assert post_dodo(stack.base, dodo_refund(payment_id, 900)).status_code == 200
    wait_processed(stack.settings, sum(status_counts(stack.settings).values()))
    assert _balance(stack.settings, customer_id) == 0
    assert _entries(stack.settings, customer_id) == 4  # credit 2000, reversals 900 + 900 + 200
