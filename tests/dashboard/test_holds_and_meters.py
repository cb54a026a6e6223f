"""Holds and usage by meter on the dashboard and the portal, over Flask's test client on SQLite
and PostgreSQL: held and available balances, the active holds (soonest expiry first, disputes
last), the Release button (the API's release_hold, audited; absent for a read key, 403 when
forged), the overview's holds expiring in 24 h, and each meter's exact cost."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta

import pytest
from flask import Flask
from sqlalchemy import func, select

from tests.support.dashboard import sign_in
from tests.support.usage import PRICING
from webhooks import create_app
from worker import ledger, usage
from worker.access import apikeys, portal
from worker.access.scopes import DEBIT, READ
from worker.config import Settings
from worker.infra.db import transaction
from worker.ledger import holds
from worker.models import AuditLog, LedgerEntry, Wallet, utcnow
from worker.reports.analytics import spend_by_meter
from worker.usage import NewEvent

HOUR = 3600


@pytest.fixture
def app(settings: Settings) -> Flask:
    return create_app(settings)


@pytest.fixture
def new_key(tx) -> Callable[..., tuple[str, str]]:
    """``new_key("read", ...)``: (key id, secret) of a new stored key."""

    def make(*granted: str) -> tuple[str, str]:
        with tx() as s:
            key, secret = apikeys.create_key(s, scopes=granted)
            return key.id, secret

    return make


@pytest.fixture
def customer_id(tx, settings: Settings) -> str:
    """Ada, with 10.00 USD."""
    with tx() as s:
        customer, _ = ledger.create_customer(s, email="ada@example.com", name="Ada Lovelace")
    ledger.post_own(
        settings,
        ledger.Leg(
            customer_id=customer.customer_id,
            currency="USD",
            amount=1000,
            is_credit=True,
            key=ledger.client_key("top-up"),
            actor="test",
        ),
    )
    return customer.customer_id


def hold(tx, customer_id: str, amount: int, seconds: int | None = HOUR, **extra) -> str:
    with tx() as s:
        outcome = holds.create_hold(
            s,
            customer_id=customer_id,
            currency="USD",
            amount=amount,
            actor="test",
            expires_in_seconds=seconds,
            **extra,
        )
        return outcome.hold.hold_id


def release_url(customer_id: str, hold_id: str) -> str:
    return f"/dashboard/customers/{customer_id}/holds/{hold_id}/release"


def test_customer_page_shows_held_and_available_next_to_the_balance(
    app: Flask, tx, customer_id: str
) -> None:
    hold(tx, customer_id, 300)
    hold(tx, customer_id, 150)
    client = app.test_client()
    sign_in(client)
    page = client.get(f"/dashboard/customers/{customer_id}").text
    assert 'data-balance="1000"' in page
    assert 'data-held="450" data-available="550"' in page
    assert "held 4.50 USD · available 5.50 USD" in page
    assert 'data-held="0" data-available="0"' in page  # the INR wallet, empty


def test_active_holds_are_listed_soonest_expiry_first_and_disputes_last(
    app: Flask, tx, customer_id: str
) -> None:
    later = hold(tx, customer_id, 200, 2 * HOUR, reason="batch job")
    dispute = hold(tx, customer_id, 100, None, kind="dispute", take_available=True)
    sooner = hold(tx, customer_id, 300, HOUR, reason="llm call")
    gone = hold(tx, customer_id, 50)
    with tx() as s:
        holds.release_hold(s, customer_id=customer_id, hold_id=gone, actor="test")
    client = app.test_client()
    sign_in(client)
    page = client.get(f"/dashboard/customers/{customer_id}").text
    rows = [page.index(f'<tr id="hold-{h}">') for h in (sooner, later, dispute)]
    assert rows == sorted(rows)
    assert f"hold-{gone}" not in page
    assert "llm call" in page and "3.00 USD" in page and "with its dispute" in page
    # A dispute's hold ends with its dispute: no Release button for it.
    assert f"Release hold {sooner}" in page and f"Release hold {dispute}" not in page


def test_the_release_form_releases_the_hold_with_the_key_as_actor_and_audits_it(
    app: Flask, tx, new_key, customer_id: str
) -> None:
    hold_id = hold(tx, customer_id, 300)
    key_id, secret = new_key(READ, DEBIT)
    client = app.test_client()
    token = sign_in(client, secret)
    assert f"Release hold {hold_id}" in client.get(f"/dashboard/customers/{customer_id}").text
    r = client.post(release_url(customer_id, hold_id), data={"csrf_token": token})
    assert r.status_code == 303, r.text
    page = client.get(r.headers["Location"]).text
    assert f"Hold {hold_id} released: 3.00 USD available again." in page
    assert "No active holds." in page and 'data-held="0" data-available="1000"' in page
    with tx() as s:
        released = holds.get_hold(s, customer_id, hold_id)
        assert (released.status, released.closed_by) == ("released", key_id)
        assert s.scalar(select(Wallet.held).where(Wallet.customer_id == customer_id)) == 0
        [entry] = s.scalars(select(AuditLog).where(AuditLog.action == "hold.released")).all()
        assert s.scalar(select(func.count()).select_from(LedgerEntry)) == 1  # the top-up only
    assert (entry.actor, entry.target) == (key_id, hold_id)
    assert entry.details == {
        "customer_id": customer_id,
        "currency": "USD",
        "amount": 300,
        "via": "dashboard",
    }
    # Sent twice (a double click): released once, audited once.
    again = client.post(release_url(customer_id, hold_id), data={"csrf_token": token})
    assert again.status_code == 303
    with tx() as s:
        assert (
            s.scalar(
                select(func.count()).select_from(AuditLog).where(AuditLog.action == "hold.released")
            )
            == 1
        )


def test_a_read_key_sees_no_release_button_and_a_forged_release_is_403(
    app: Flask, tx, new_key, customer_id: str
) -> None:
    hold_id = hold(tx, customer_id, 300)
    _, secret = new_key(READ)
    client = app.test_client()
    token = sign_in(client, secret)
    page = client.get(f"/dashboard/customers/{customer_id}").text
    assert f'<tr id="hold-{hold_id}">' in page and "Release" not in page
    r = client.post(release_url(customer_id, hold_id), data={"csrf_token": token})
    assert r.status_code == 403 and "debit" in r.text
    with tx() as s:
        assert holds.get_hold(s, customer_id, hold_id).status == "active"


def test_a_release_without_the_csrf_token_changes_nothing(app: Flask, tx, customer_id: str) -> None:
    hold_id = hold(tx, customer_id, 300)
    client = app.test_client()
    sign_in(client)
    for token in ("", "wrong"):
        r = client.post(release_url(customer_id, hold_id), data={"csrf_token": token})
        assert r.status_code == 403 and "CSRF" in r.text
    with tx() as s:
        assert holds.get_hold(s, customer_id, hold_id).status == "active"
        assert s.scalar(select(func.count()).select_from(AuditLog)) == 0


def test_a_captured_hold_is_not_released_and_the_page_says_why(
    app: Flask, tx, customer_id: str
) -> None:
    hold_id = hold(tx, customer_id, 300)
    with tx() as s:
        holds.capture_hold(s, customer_id=customer_id, hold_id=hold_id, actor="test", amount=120)
    client = app.test_client()
    token = sign_in(client)
    r = client.post(release_url(customer_id, hold_id), data={"csrf_token": token})
    assert r.status_code == 409 and "captured" in r.text
    with tx() as s:
        assert holds.get_hold(s, customer_id, hold_id).captured_amount == 120
        assert s.scalar(select(func.count()).select_from(AuditLog)) == 0


def test_overview_lists_the_holds_expiring_within_24_hours(
    app: Flask, tx, customer_id: str
) -> None:
    client = app.test_client()
    sign_in(client)
    assert "No hold expires in the next 24 hours." in client.get("/dashboard").text
    soon = hold(tx, customer_id, 250, HOUR)
    sooner = hold(tx, customer_id, 100, HOUR // 2)
    later = hold(tx, customer_id, 300, 2 * 24 * HOUR)
    dispute = hold(tx, customer_id, 50, None, kind="dispute", take_available=True)
    page = client.get("/dashboard").text
    assert page.index(f"<code>{sooner}</code>") < page.index(f"<code>{soon}</code>")
    assert later not in page and dispute not in page
    assert f'href="/dashboard/customers/{customer_id}"' in page and "2.50 USD" in page


def ingest(settings: Settings, customer_id: str, events: list[tuple[str, dict | None]]) -> None:
    now = utcnow()
    with transaction(settings) as s:
        usage.ingest(
            s,
            [
                NewEvent(
                    event_id=uuid.uuid4().hex,
                    customer_id=customer_id,
                    event_name=name,
                    timestamp=now - timedelta(minutes=5),
                    metadata=metadata,
                )
                for name, metadata in events
            ],
            pricing=PRICING,
        )


def test_customer_page_shows_usage_by_meter_at_its_exact_cost(
    app: Flask, settings: Settings, tx, customer_id: str
) -> None:
    client = app.test_client()
    sign_in(client)
    assert (
        "No priced usage in the last 30 days."
        in client.get(f"/dashboard/customers/{customer_id}").text
    )
    # 3 calls at 0.3 cents, 1234 tokens at 0.002 cents: 0.9 and 2.468 cents, exactly.
    ingest(settings, customer_id, [("api_call", None)] * 3 + [("llm_tokens", {"tokens": 1234})])
    with tx() as s:
        usage.bill_batch(s)
    page = client.get(f"/dashboard/customers/{customer_id}").text
    tokens = page.index(
        'data-meter="llm_tokens" data-currency="USD" data-cost-scaled="2468000000000"'
    )
    calls = page.index('data-meter="api_call" data-currency="USD" data-cost-scaled="900000000000"')
    assert tokens < calls  # costliest first
    assert "0.02468 USD" in page and "0.009 USD" in page
    with tx() as s:
        spent = spend_by_meter(s, customer_id)
        assert [(m.meter, m.events, m.cost) for m in spent] == [
            ("llm_tokens", 1, 2),
            ("api_call", 3, 0),
        ]
        # 31 days on, the window no longer holds them.
        assert spend_by_meter(s, customer_id, now=utcnow() + timedelta(days=31)) == []


def test_the_portal_shows_available_and_held(
    app: Flask, settings: Settings, tx, customer_id: str
) -> None:
    hold(tx, customer_id, 300)
    link = portal.create_link(settings, customer_id)
    page = app.test_client().get(link.path).text
    assert 'data-held="300" data-available="700"' in page
    assert "available 7.00 USD · 3.00 USD reserved for work in progress" in page
