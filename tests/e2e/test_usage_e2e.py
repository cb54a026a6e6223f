"""End to end on PostgreSQL: the Dodo SDK against the web server, a real Celery worker on a private
redis-server, billing each event exactly once."""

from __future__ import annotations

import threading
from decimal import Decimal
from pathlib import Path

import dodopayments
import pytest

from tests.support.processes import (
    celery_worker,
    create_pg_database,
    drop_pg_database,
    process_env,
    redis_server,
    stop,
    wait_until,
    web_server,
)
from tests.support.usage import PRICING_TOML, accounting, assert_exact, new_customer
from worker import usage
from worker.config import Settings
from worker.infra import migrate
from worker.infra.db import dispose_engines, transaction

# A PostgreSQL-backed server refuses a bootstrap key shorter than 32 characters.
E2E_KEY = "e2e-key-0123456789abcdefghijklmnopqrs"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    """(settings, base_url): PostgreSQL, redis-server, the web server and a Celery worker."""
    tmp = tmp_path_factory.mktemp("usage-e2e")
    name, url = create_pg_database()
    settings = Settings(database_url=url, api_key=E2E_KEY)
    migrate.upgrade(settings)
    pricing = tmp / "pricing.toml"
    pricing.write_text(PRICING_TOML)
    with redis_server(tmp) as (redis_url, _):
        env = process_env(
            DATABASE_URL=url,
            CELERY_BROKER_URL=redis_url,
            BILLING_API_KEY=E2E_KEY,
            PRICING_FILE=str(pricing),
        )
        worker = celery_worker(env, tmp, concurrency=2)
        try:
            with web_server(env, tmp, workers=2) as base:
                yield settings, base
        finally:
            stop(worker)
            log = Path(tmp / "celery-worker.log")
            if log.exists():
                print(log.read_text()[-3000:])
    dispose_engines()
    drop_pg_database(name)


@pytest.fixture
def sdk(stack):
    """The official Dodo SDK pointed at the web server."""
    _, base = stack
    with dodopayments.DodoPayments(bearer_token=E2E_KEY, base_url=base, max_retries=0) as c:
        yield c


def _pending(settings: Settings) -> int:
    with transaction(settings) as s:
        return usage.count_pending(s)


def test_sdk_ingest_is_billed_by_the_worker(stack, sdk):
    settings, _ = stack
    with transaction(settings) as s:
        cid = new_customer(s, "e2e-ada@example.com", credit=1000)
    events = [{"event_id": f"a{i}", "customer_id": cid, "event_name": "api_call"} for i in range(9)]
    events.append(
        {
            "event_id": "a-t",
            "customer_id": cid,
            "event_name": "llm_tokens",
            "metadata": {"tokens": 777},
        }
    )
    assert sdk.usage_events.ingest(events=events).ingested_count == 10
    assert sdk.usage_events.ingest(events=events).ingested_count == 0  # duplicates ignored

    def billed() -> bool:
        usd = next(w for w in sdk.customers.wallets.list(cid).items if w.currency == "USD")
        return usd.balance == 996 and usd.model_extra["pending_usage"] == "0.254"

    # 9 x 0.3 + 777 x 0.002 = 4.254 cents: 4 debited, 0.254 accrued.
    wait_until(billed, timeout=30, what="the worker to bill the events")
    statuses = {
        e.model_extra["status"] for e in sdk.usage_events.list(customer_id=cid, page_size=20)
    }
    assert statuses == {"processed"}


def test_invalid_events_get_422_with_details(stack, sdk):
    with pytest.raises(dodopayments.UnprocessableEntityError) as caught:
        sdk.usage_events.ingest(
            events=[{"event_id": "x1", "customer_id": "cus_missing", "event_name": "api_call"}]
        )
    assert caught.value.body["errors"] == [
        {"index": 0, "field": "events.0.customer_id", "message": "customer cus_missing not found"}
    ]


def test_same_events_ingested_three_times_concurrently_are_billed_once(stack, sdk):
    settings, base = stack
    with transaction(settings) as s:
        customers = [new_customer(s, f"e2e-c{i}@example.com", credit=10_000) for i in range(5)]
    events = [
        {
            "event_id": f"once-{i}",
            "customer_id": customers[i % 5],
            "event_name": "llm_tokens",
            "metadata": {"tokens": 333 + i},
        }
        for i in range(600)
    ]
    counts: list[int] = []

    def post() -> None:
        with dodopayments.DodoPayments(bearer_token=E2E_KEY, base_url=base, max_retries=0) as c:
            for start in range(0, 600, 200):
                counts.append(
                    c.usage_events.ingest(events=events[start : start + 200]).ingested_count
                )

    threads = [threading.Thread(target=post) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(counts) == 600
    wait_until(lambda: _pending(settings) == 0, timeout=60, what="billing")
    # Simulated redelivery: the billing task's body run twice more finds nothing to bill.
    assert usage_billed_now(settings) == 0
    assert usage_billed_now(settings) == 0
    expected = {c: Decimal(0) for c in customers}
    for i in range(600):
        expected[customers[i % 5]] += Decimal("0.002") * (333 + i)
    with transaction(settings) as s:
        for cid in customers:
            acc = accounting(s, cid)
            assert acc["cost"] == expected[cid]
            assert acc["debited"] == int(expected[cid])
            assert acc["balance"] == 10_000 - int(expected[cid])
            assert_exact(acc)


def usage_billed_now(settings: Settings) -> int:
    with transaction(settings) as s:
        return usage.bill_batch(s).events


def test_insufficient_balance_is_billed_partially_and_settled_after_top_up(stack, sdk):
    settings, _ = stack
    with transaction(settings) as s:
        cid = new_customer(s, "e2e-poor@example.com", credit=2)
    sdk.usage_events.ingest(
        events=[
            {"event_id": f"p{i}", "customer_id": cid, "event_name": "api_call"} for i in range(20)
        ]
    )
    wait_until(lambda: _pending(settings) == 0, timeout=30, what="billing")
    with transaction(settings) as s:
        acc = accounting(s, cid)
        # 20 x 0.3 = 6 cents: 2 debited, 4 unbilled, balance 0 (never negative).
        assert (acc["balance"], acc["debited"], acc["unbilled"], acc["remainder"]) == (0, 2, 4, 0)
    unbilled = sdk.usage_events.list(customer_id=cid, page_size=50).items
    assert sum(e.model_extra["unbilled_amount"] for e in unbilled) == 4
    sdk.customers.wallets.ledger_entries.create(
        cid, amount=3, currency="USD", entry_type="credit", reason="top-up"
    )
    with transaction(settings) as s:
        [settled] = usage.settle(s, cid)
    assert (settled.debited, settled.still_unbilled) == (3, 1)
    sdk.customers.wallets.ledger_entries.create(
        cid, amount=10, currency="USD", entry_type="credit", reason="top-up"
    )
    with transaction(settings) as s:
        [settled] = usage.settle(s, cid)
    assert (settled.debited, settled.still_unbilled) == (1, 0)
    with transaction(settings) as s:
        assert usage.settle(s, cid) == []  # settled twice: nothing more happens
    with transaction(settings) as s:
        acc = accounting(s, cid)
        assert (acc["balance"], acc["debited"], acc["unbilled"]) == (9, 6, 0)
        assert_exact(acc)
