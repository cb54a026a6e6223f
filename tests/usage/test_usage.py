"""Usage billing on both backends: the Dodo SDK against the app in-process, billing called
synchronously (the worker's task body), and the exactness invariant after every step."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import dodopayments
import httpx
import pytest
from sqlalchemy import select

from tests.support.processes import ROOT, process_env
from tests.support.usage import PRICING_TOML, accounting, assert_exact, new_customer
from webhooks import create_app
from worker import usage
from worker.config import ConfigError, Settings
from worker.models import LedgerEntry, UsageEvent


@pytest.fixture
def pricing_file(tmp_path: Path) -> Path:
    """The test prices: api_call 0.3 cents, llm_tokens 0.002 cents per token."""
    path = tmp_path / "pricing.toml"
    path.write_text(PRICING_TOML)
    return path


@pytest.fixture
def app_settings(settings: Settings, pricing_file: Path) -> Settings:
    """Test settings with the pricing file."""
    return settings.with_overrides(pricing_file=str(pricing_file))


@pytest.fixture
def client(app_settings: Settings):
    """The official Dodo SDK, talking to the app in-process (billing is run by the test)."""
    app = create_app(app_settings)
    app.config["USAGE_ENQUEUE"] = False
    http = httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://app")
    with dodopayments.DodoPayments(
        bearer_token="test-key", base_url="http://app", http_client=http, max_retries=0
    ) as sdk:
        yield sdk


def bill_all(settings: Settings, batch_size: int = usage.BATCH_SIZE) -> int:
    """What the worker's task does: batches until nothing is pending."""
    total = 0
    while True:
        with usage_tx(settings) as s:
            n = usage.bill_batch(s, limit=batch_size).events
        total += n
        if n < batch_size:
            return total


def usage_tx(settings: Settings):
    from worker.infra.db import transaction

    return transaction(settings)


def test_sdk_ingest_debits_priced_usage_and_keeps_the_remainder(client, app_settings, tx):
    with tx() as s:
        cid = new_customer(s, "ada@example.com", credit=1000)
    result = client.usage_events.ingest(
        events=[
            {"event_id": "e1", "customer_id": cid, "event_name": "api_call"},
            {"event_id": "e2", "customer_id": cid, "event_name": "api_call"},
            {
                "event_id": "e3",
                "customer_id": cid,
                "event_name": "llm_tokens",
                "timestamp": datetime.now(UTC) - timedelta(minutes=5),
                "metadata": {"tokens": 1550, "model": "small"},
            },
        ]
    )
    assert result.ingested_count == 3
    assert bill_all(app_settings) == 3
    # 0.3 + 0.3 + 1550 * 0.002 = 3.7 cents: 3 debited, 0.7 accrued.
    wallets = client.customers.wallets.list(cid)
    usd = next(w for w in wallets.items if w.currency == "USD")
    assert usd.balance == 997
    assert usd.model_extra["pending_usage"] == "0.7"
    with tx() as s:
        entries = s.scalars(select(LedgerEntry).where(LedgerEntry.event_type == "usage")).all()
        assert [(e.amount, e.reason) for e in entries] == [
            (3, "usage: 3 event(s) (api_call, llm_tokens)")
        ]
        assert_exact(accounting(s, cid))


def test_seen_event_ids_are_ignored(client, app_settings, tx):
    with tx() as s:
        cid = new_customer(s, "bob@example.com", credit=100)
    events = [
        {"event_id": f"dup-{i}", "customer_id": cid, "event_name": "api_call"} for i in range(4)
    ]
    assert client.usage_events.ingest(events=events).ingested_count == 4
    bill_all(app_settings)
    more = [*events, {"event_id": "dup-new", "customer_id": cid, "event_name": "api_call"}]
    assert client.usage_events.ingest(events=more).ingested_count == 1
    bill_all(app_settings)
    with tx() as s:
        acc = accounting(s, cid)
        assert acc["cost"] == Decimal("1.5")
        assert acc["debited"] == 1 and acc["remainder"] == Decimal("0.5")
        assert_exact(acc)


def test_invalid_events_are_rejected_whole_with_index_and_field(client, tx):
    with tx() as s:
        cid = new_customer(s, "cy@example.com")
    old = datetime.now(UTC) - timedelta(hours=2)
    ahead = datetime.now(UTC) + timedelta(minutes=10)
    with pytest.raises(dodopayments.UnprocessableEntityError) as caught:
        client.usage_events.ingest(
            events=[
                {"event_id": "ok-0", "customer_id": cid, "event_name": "api_call"},
                {
                    "event_id": "bad-1",
                    "customer_id": cid,
                    "event_name": "api_call",
                    "timestamp": old,
                },
                {"event_id": "bad-2", "customer_id": "cus_nope", "event_name": "api_call"},
                {"event_id": "bad-3", "customer_id": cid, "event_name": "x", "timestamp": ahead},
                {"event_id": "ok-0", "customer_id": cid, "event_name": "api_call"},
            ]
        )
    body = caught.value.body
    assert body["code"] == "VALIDATION_ERROR"
    assert [(e["index"], e["field"]) for e in body["errors"]] == [
        (1, "events.1.timestamp"),
        (2, "events.2.customer_id"),
        (3, "events.3.timestamp"),
        (4, "events.4.event_id"),
    ]
    with tx() as s:
        assert s.scalars(select(UsageEvent)).all() == []


def test_an_unknown_customer_alone_rejects_the_request_and_stores_nothing(client, tx):
    # The only error: on PostgreSQL the customers are checked inside the INSERT itself.
    with tx() as s:
        cid = new_customer(s, "cz@example.com")
    with pytest.raises(dodopayments.UnprocessableEntityError) as caught:
        client.usage_events.ingest(
            events=[
                {"event_id": "k-0", "customer_id": cid, "event_name": "api_call"},
                {"event_id": "k-1", "customer_id": "cus_gone", "event_name": "api_call"},
                {"event_id": "k-2", "customer_id": cid, "event_name": "api_call"},
                {"event_id": "k-3", "customer_id": "cus_gone", "event_name": "api_call"},
            ]
        )
    assert [(e["index"], e["field"]) for e in caught.value.body["errors"]] == [
        (1, "events.1.customer_id"),
        (3, "events.3.customer_id"),
    ]
    with tx() as s:
        assert s.scalars(select(UsageEvent)).all() == []
    events = [
        {"event_id": f"k-{i}", "customer_id": cid, "event_name": "api_call"} for i in (0, 1, 2)
    ]
    assert client.usage_events.ingest(events=events).ingested_count == 3
    with tx() as s:
        stored = s.scalars(select(UsageEvent.event_id).order_by(UsageEvent.seq)).all()
    assert stored == ["k-0", "k-1", "k-2"]  # seq follows the request's order


def test_metadata_objects_and_arrays_are_rejected(client, tx):
    with tx() as s:
        cid = new_customer(s, "dee@example.com")
    with pytest.raises(dodopayments.UnprocessableEntityError) as caught:
        client.usage_events.ingest(
            events=[
                {"event_id": "m0", "customer_id": cid, "event_name": "a", "metadata": {"k": 1}},
                {
                    "event_id": "m1",
                    "customer_id": cid,
                    "event_name": "a",
                    "metadata": {"nested": {"x": 1}},  # type: ignore[dict-item]
                },
                {"event_id": "m2", "customer_id": cid, "event_name": "a", "metadata": {"l": [1]}},  # type: ignore[dict-item]
            ]
        )
    fields = {e["field"].split(".")[:2][1] for e in caught.value.body["errors"]}
    assert fields == {"1", "2"}
    with tx() as s:
        assert s.scalars(select(UsageEvent)).all() == []


def test_over_1000_events_are_rejected(client, tx):
    with tx() as s:
        cid = new_customer(s, "ed@example.com")
    events = [{"event_id": f"n{i}", "customer_id": cid, "event_name": "a"} for i in range(1001)]
    with pytest.raises(dodopayments.UnprocessableEntityError) as caught:
        client.usage_events.ingest(events=events)
    assert caught.value.body["field"] == "body.events" or "events" in caught.value.body["field"]


def test_unpriced_and_invalid_quantities_are_kept_with_a_status(client, app_settings, tx):
    with tx() as s:
        cid = new_customer(s, "fay@example.com", credit=100)
    client.usage_events.ingest(
        events=[
            {"event_id": "u1", "customer_id": cid, "event_name": "no_such_price"},
            {
                "event_id": "q1",
                "customer_id": cid,
                "event_name": "llm_tokens",
                "metadata": {"tokens": "many"},
            },
            {"event_id": "q2", "customer_id": cid, "event_name": "llm_tokens"},
            {
                "event_id": "q3",
                "customer_id": cid,
                "event_name": "llm_tokens",
                "metadata": {"tokens": "2500"},
            },
        ]
    )
    bill_all(app_settings)
    listed = {e.event_id: e for e in client.usage_events.list(customer_id=cid, page_size=10).items}
    assert {k: v.model_extra["status"] for k, v in listed.items()} == {
        "u1": "unpriced",
        "q1": "invalid",
        "q2": "invalid",
        "q3": "processed",
    }
    assert "metadata.tokens" in listed["q1"].model_extra["error"]
    assert listed["q3"].model_extra["cost"] == "5"
    assert listed["u1"].model_extra["cost"] is None
    only_tokens = client.usage_events.list(customer_id=cid, event_name="llm_tokens").items
    assert len(only_tokens) == 3
    with tx() as s:
        acc = accounting(s, cid)
        assert acc["balance"] == 95
        assert_exact(acc)


def test_billing_twice_changes_nothing(client, app_settings, tx):
    with tx() as s:
        cid = new_customer(s, "gus@example.com", credit=100)
    client.usage_events.ingest(
        events=[
            {"event_id": f"r{i}", "customer_id": cid, "event_name": "api_call"} for i in range(7)
        ]
    )
    assert bill_all(app_settings) == 7
    assert bill_all(app_settings) == 0  # a redelivered task finds nothing pending
    with tx() as s:
        acc = accounting(s, cid)
        assert (acc["debited"], acc["remainder"], acc["balance"]) == (
            2,
            Decimal("0.1"),
            98,
        )


def test_insufficient_balance_debits_what_it_can_and_settles_after_top_up(client, app_settings, tx):
    with tx() as s:
        cid = new_customer(s, "hal@example.com", credit=5)
    # 3 x 2.5 cents = 7.5: 5 debited, 2 unbilled, 0.5 accrued.
    client.usage_events.ingest(
        events=[
            {
                "event_id": f"i{i}",
                "customer_id": cid,
                "event_name": "llm_tokens",
                "metadata": {"tokens": 1250},
            }
            for i in range(3)
        ]
    )
    bill_all(app_settings)
    with tx() as s:
        acc = accounting(s, cid)
        assert (acc["balance"], acc["debited"], acc["unbilled"]) == (0, 5, 2)
        assert_exact(acc)
        events = s.scalars(select(UsageEvent).order_by(UsageEvent.seq)).all()
        assert [(e.status, e.unbilled_amount) for e in events] == [
            ("processed", 0),
            ("processed", 0),
            ("unbilled", 2),
        ]
    with tx() as s:
        assert usage.settle(s, cid)[0].debited == 0  # still empty: nothing to take
        new_customer(s, "hal@example.com", credit=0)
        from worker import ledger

        ledger.post_entry(s, customer_id=cid, currency="USD", amount=10, is_credit=True)
    # The operator's command, as a real process on this database.
    run = subprocess.run(
        [sys.executable, "-m", "worker", "usage", "settle", cid],
        env=process_env(DATABASE_URL=app_settings.database_url),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert "debited 2, 1 event(s) settled, 0 still unbilled" in run.stdout
    with tx() as s:
        acc = accounting(s, cid)
        assert (acc["balance"], acc["debited"], acc["unbilled"]) == (8, 7, 0)
        assert_exact(acc)
        assert usage.settle(s, cid) == []  # nothing outstanding any more


def test_cli_lists_unbilled_usage(app_settings, tx):
    with tx() as s:
        cid = new_customer(s, "ivy@example.com", credit=0)
        from tests.support.usage import PRICING

        usage.ingest(
            s,
            [usage.NewEvent("v1", cid, "api_call"), usage.NewEvent("v2", cid, "api_call")],
            pricing=PRICING,
        )
        usage.ingest(
            s, [usage.NewEvent(f"v{i}", cid, "api_call") for i in range(3, 6)], pricing=PRICING
        )
    bill_all(app_settings)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "worker",
            "usage",
            "list",
            "--status",
            "unbilled",
            "--customer",
            cid,
        ],
        env=process_env(DATABASE_URL=app_settings.database_url),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    # 5 x 0.3 = 1.5: one whole cent owed, by the newest event.
    assert run.stdout.count("unbilled 1") == 1 and "v5" in run.stdout


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("[prices.a\ncurrency = 'USD'", "not valid TOML"),
        ("[prices.a]\ncurrency = 'USD'\nunit_amount = 0.1", "decimal string"),
        ("[prices.a]\ncurrency = 'EUR'\nunit_amount = '1'", "currency must be one of"),
        ("[prices.a]\ncurrency = 'USD'\nunit_amount = '0.0000000000001'", "12 decimal places"),
        ("[prices.a]\ncurrency = 'USD'\nunit_amount = 'abc'", "not a decimal number"),
        ("[prices.a]\ncurrency = 'USD'\nunit_amount = '-1'", ">= 0"),
        ("[prices.a]\ncurrency = 'USD'\nunit_amount = '1'\nquantity_keys = 'x'", "unknown key"),
        ("[price.a]\ncurrency = 'USD'", "unknown top-level key"),
    ],
)
def test_a_malformed_pricing_file_stops_start_up_naming_the_problem(tmp_path, content, problem):
    path = tmp_path / "p.toml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=problem):
        create_app(Settings(database_url=f"sqlite:///{tmp_path}/x.db", pricing_file=str(path)))


def test_a_missing_pricing_file_stops_start_up(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        create_app(Settings(pricing_file=str(tmp_path / "missing.toml")))


def test_the_example_pricing_file_loads():
    from worker.usage.pricing import load

    prices = load(os.path.join(ROOT, "pricing.example.toml"), ("USD", "INR"))
    assert set(prices.prices) == {"api_call", "llm_tokens", "image_generation"}


def test_a_batch_of_take_debits_takes_what_each_wallet_holds_and_refuses_a_reused_key(tx):
    from worker import ledger
    from worker.errors import DuplicateEntry

    with tx() as s:
        rich = new_customer(s, "rich@example.com", credit=100)
        poor = new_customer(s, "poor@example.com", credit=3)
        empty = new_customer(s, "empty@example.com")
    legs = [
        ledger.Leg(
            cid,
            "USD",
            40,
            is_credit=False,
            event_type="usage",
            key=ledger.system_key("k1"),
            on_short=ledger.OnShort.TAKE,
        )
        for cid in (rich, poor, empty)
    ]
    with tx() as s:
        results = ledger.post(s, legs)
    assert [
        (r.entry.amount, r.entry.after_balance, r.shortfall) if r else None for r in results
    ] == [
        (40, 60, 0),
        (3, 0, 37),
        None,
    ]
    with pytest.raises(DuplicateEntry), tx() as s:
        ledger.post(s, legs[:1])
    with tx() as s:
        assert ledger.verify(s).ok
