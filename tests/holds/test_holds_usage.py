"""Usage events carrying ``metadata.hold_id``, through the Dodo SDK against the app in-process
(holds created with the SDK's ``client.post``), billed as the worker's task bills them: the
exact priced cost is captured from the hold, the rest of it released, and the exactness
invariant holds."""

from __future__ import annotations

from pathlib import Path

import dodopayments
import httpx
import pytest
from sqlalchemy import select

from tests.support.usage import PRICING_TOML, accounting, assert_exact, new_customer
from webhooks import create_app
from worker import usage
from worker.config import Settings
from worker.infra.db import transaction
from worker.models import LedgerEntry, UsageEvent, Wallet, WalletHold


@pytest.fixture
def app_settings(settings: Settings, tmp_path: Path) -> Settings:
    """Test settings with the test prices (llm_tokens 0.002 cents per token)."""
    path = tmp_path / "pricing.toml"
    path.write_text(PRICING_TOML)
    return settings.with_overrides(pricing_file=str(path))


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


def hold(client: dodopayments.DodoPayments, cid: str, amount: int) -> dict:
    return client.post(
        f"/customers/{cid}/wallets/holds",
        cast_to=object,
        body={"amount": amount, "currency": "USD", "reason": "llm call"},
    )


def ingest(client: dodopayments.DodoPayments, cid: str, hold_id: str, tokens: int) -> None:
    client.usage_events.ingest(
        events=[
            {
                "event_id": f"e-{hold_id}",
                "customer_id": cid,
                "event_name": "llm_tokens",
                "metadata": {"tokens": tokens, "hold_id": hold_id},
            }
        ]
    )


def bill(settings: Settings) -> None:
    with transaction(settings) as s:
        usage.bill_batch(s)


def state(settings: Settings, cid: str, hold_id: str) -> tuple:
    with transaction(settings) as s:
        w = s.get(Wallet, (cid, "USD"))
        h = s.get(WalletHold, (cid, hold_id))
        event = s.scalars(select(UsageEvent)).one()
        entries = s.scalars(
            select(LedgerEntry.amount).where(LedgerEntry.event_type == "usage")
        ).all()
        assert_exact(accounting(s, cid))
        return (
            (w.balance, w.held, w.pending_usage_scaled),
            (h.status, h.captured_amount),
            (event.status, event.unbilled_amount, event.ledger_entry_id == h.entry_id),
            sorted(entries),
        )


def test_an_event_with_hold_id_captures_exactly_its_price(client, app_settings, tx) -> None:
    with tx() as s:
        cid = new_customer(s, "u1@example.com", credit=1000)
    h = hold(client, cid, 50)
    ingest(client, cid, h["hold_id"], 1550)  # 3.1 cents: 3 captured, 0.1 accrued
    bill(app_settings)
    assert state(app_settings, cid, h["hold_id"]) == (
        (997, 0, 10**11),
        ("captured", 3),
        ("processed", 0, True),
        [3],
    )


def test_a_cost_above_the_hold_bills_the_rest_from_the_available_balance(
    client, app_settings, tx
) -> None:
    with tx() as s:
        cid = new_customer(s, "u2@example.com", credit=1000)
    h = hold(client, cid, 2)
    ingest(client, cid, h["hold_id"], 1550)  # 3.1: 2 from the hold, 1 as usage, 0.1 accrued
    bill(app_settings)
    assert state(app_settings, cid, h["hold_id"]) == (
        (997, 0, 10**11),
        ("captured", 2),
        ("processed", 0, True),
        [1, 2],
    )


def test_beyond_the_hold_a_short_wallet_leaves_the_rest_unbilled(client, app_settings, tx) -> None:
    with tx() as s:
        cid = new_customer(s, "u3@example.com", credit=2)
    h = hold(client, cid, 2)
    ingest(client, cid, h["hold_id"], 2550)  # 5.1: 2 captured, 3 unbilled, 0.1 accrued
    bill(app_settings)
    assert state(app_settings, cid, h["hold_id"]) == (
        (0, 0, 10**11),
        ("captured", 2),
        ("unbilled", 3, True),
        [2],
    )


def test_a_hold_used_by_no_active_hold_bills_the_event_as_usual(client, app_settings, tx) -> None:
    with tx() as s:
        cid = new_customer(s, "u4@example.com", credit=1000)
    h = hold(client, cid, 50)
    client.post(f"/customers/{cid}/wallets/holds/{h['hold_id']}/release", cast_to=object)
    ingest(client, cid, h["hold_id"], 1550)
    bill(app_settings)
    with transaction(app_settings) as s:
        assert s.get(WalletHold, (cid, h["hold_id"])).status == "released"
        assert s.get(Wallet, (cid, "USD")).balance == 997
        assert_exact(accounting(s, cid))
