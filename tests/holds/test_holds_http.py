"""The holds API through Flask's test client, on SQLite and PostgreSQL: the answers, the
errors each refusal maps to, and the wallet's three balances."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient

from webhooks import create_app
from worker.config import Settings

AUTH = {"Authorization": "Bearer test-key"}


@pytest.fixture
def client(settings: Settings) -> Iterator[FlaskClient]:
    """A test client of the app on the test database, bootstrap key ``test-key``."""
    yield create_app(settings).test_client()


@pytest.fixture
def cid(client: FlaskClient) -> str:
    """A customer with 1000 USD cents."""
    r = client.post("/customers", json={"email": "h@example.com", "name": "H"}, headers=AUTH)
    cid = r.json["customer_id"]
    r = client.post(
        f"/customers/{cid}/wallets/ledger-entries",
        json={"amount": 1000, "currency": "USD", "entry_type": "credit"},
        headers=AUTH,
    )
    assert r.status_code == 200
    return cid


def holds_url(cid: str, *rest: str) -> str:
    return "/".join([f"/customers/{cid}/wallets/holds", *rest])


def usd(client: FlaskClient, cid: str) -> dict:
    items = client.get(f"/customers/{cid}/wallets", headers=AUTH).json["items"]
    return next(w for w in items if w["currency"] == "USD")


def test_hold_capture_and_the_wallets_three_balances(client: FlaskClient, cid: str) -> None:
    r = client.post(
        holds_url(cid), json={"amount": 400, "currency": "USD", "reason": "gpt call"}, headers=AUTH
    )
    assert r.status_code == 200, r.json
    hold = r.json
    assert hold["hold_id"].startswith("hold_")
    assert (hold["status"], hold["amount"], hold["captured_amount"]) == ("active", 400, 0)
    assert hold["expires_at"].endswith("Z") and hold["created_at"].endswith("Z")
    w = usd(client, cid)
    assert (w["balance"], w["held_balance"], w["available_balance"]) == (1000, 400, 600)
    r = client.post(holds_url(cid, hold["hold_id"], "capture"), json={"amount": 150}, headers=AUTH)
    assert r.status_code == 200, r.json
    assert (r.json["status"], r.json["captured_amount"], r.json["released_amount"]) == (
        "captured",
        150,
        250,
    )
    entry_id = r.json["ledger_entry_id"]
    entry = client.get(f"/customers/{cid}/wallets/ledger-entries/{entry_id}", headers=AUTH).json
    assert (entry["amount"], entry["is_credit"], entry["event_type"]) == (150, False, "usage")
    w = usd(client, cid)
    assert (w["balance"], w["held_balance"], w["available_balance"]) == (850, 0, 850)
    again = client.post(
        holds_url(cid, hold["hold_id"], "capture"), json={"amount": 150}, headers=AUTH
    )
    assert again.status_code == 200 and again.json == r.json
    assert usd(client, cid)["balance"] == 850


def test_capture_without_a_body_takes_the_whole_hold(client: FlaskClient, cid: str) -> None:
    hold = client.post(holds_url(cid), json={"amount": 300, "currency": "USD"}, headers=AUTH).json
    r = client.post(holds_url(cid, hold["hold_id"], "capture"), headers=AUTH)
    assert r.status_code == 200, r.json
    assert r.json["captured_amount"] == 300
    assert usd(client, cid)["balance"] == 700


def test_a_hold_above_the_available_balance_is_insufficient_balance(
    client: FlaskClient, cid: str
) -> None:
    client.post(holds_url(cid), json={"amount": 800, "currency": "USD"}, headers=AUTH)
    r = client.post(holds_url(cid), json={"amount": 201, "currency": "USD"}, headers=AUTH)
    assert r.status_code == 400
    assert (r.json["code"], r.json["balance"], r.json["requested_amount"]) == (
        "INSUFFICIENT_BALANCE",
        200,
        201,
    )
    debit = client.post(
        f"/customers/{cid}/wallets/ledger-entries",
        json={"amount": 201, "currency": "USD", "entry_type": "debit"},
        headers=AUTH,
    )
    assert debit.status_code == 400 and debit.json["code"] == "INSUFFICIENT_BALANCE"
    assert usd(client, cid)["held_balance"] == 800


def test_capture_above_the_hold_is_a_422_naming_amount(client: FlaskClient, cid: str) -> None:
    hold = client.post(holds_url(cid), json={"amount": 100, "currency": "USD"}, headers=AUTH).json
    r = client.post(holds_url(cid, hold["hold_id"], "capture"), json={"amount": 101}, headers=AUTH)
    assert r.status_code == 422 and r.json["field"] == "amount"


def test_released_and_captured_holds_answer_hold_not_active(client: FlaskClient, cid: str) -> None:
    a = client.post(holds_url(cid), json={"amount": 100, "currency": "USD"}, headers=AUTH).json
    b = client.post(holds_url(cid), json={"amount": 100, "currency": "USD"}, headers=AUTH).json
    released = client.post(holds_url(cid, a["hold_id"], "release"), headers=AUTH)
    assert released.status_code == 200 and released.json["status"] == "released"
    assert client.post(holds_url(cid, a["hold_id"], "release"), headers=AUTH).json == released.json
    r = client.post(holds_url(cid, a["hold_id"], "capture"), headers=AUTH)
    assert r.status_code == 409
    assert (r.json["code"], r.json["status"]) == ("HOLD_NOT_ACTIVE", "released")
    client.post(holds_url(cid, b["hold_id"], "capture"), json={"amount": 50}, headers=AUTH)
    r = client.post(holds_url(cid, b["hold_id"], "release"), headers=AUTH)
    assert (r.status_code, r.json["code"], r.json["status"]) == (409, "HOLD_NOT_ACTIVE", "captured")


def test_get_and_list_holds_by_status(client: FlaskClient, cid: str) -> None:
    a = client.post(holds_url(cid), json={"amount": 100, "currency": "USD"}, headers=AUTH).json
    b = client.post(holds_url(cid), json={"amount": 200, "currency": "USD"}, headers=AUTH).json
    client.post(holds_url(cid, a["hold_id"], "release"), headers=AUTH)
    got = client.get(holds_url(cid, b["hold_id"]), headers=AUTH)
    assert got.status_code == 200 and got.json == b
    active = client.get(holds_url(cid) + "?status=active", headers=AUTH).json["items"]
    assert [h["hold_id"] for h in active] == [b["hold_id"]]
    every = client.get(holds_url(cid), headers=AUTH).json["items"]
    assert {h["hold_id"] for h in every} == {a["hold_id"], b["hold_id"]}
    bad = client.get(holds_url(cid) + "?status=nope", headers=AUTH)
    assert bad.status_code == 422
    missing = client.get(holds_url(cid, "hold_missing"), headers=AUTH)
    assert (missing.status_code, missing.json["code"]) == (404, "HOLD_NOT_FOUND")


def test_the_same_idempotency_key_answers_the_same_hold(client: FlaskClient, cid: str) -> None:
    body = {"amount": 100, "currency": "USD", "idempotency_key": "req-1"}
    first = client.post(holds_url(cid), json=body, headers=AUTH)
    second = client.post(holds_url(cid), json=body, headers=AUTH)
    assert second.status_code == 200 and second.json == first.json
    other = client.post(holds_url(cid), json={**body, "amount": 101}, headers=AUTH)
    assert (other.status_code, other.json["code"]) == (422, "IDEMPOTENCY_KEY_REUSED")
    assert other.json["differing_fields"] == ["amount"]
    assert usd(client, cid)["held_balance"] == 100


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"amount": 1.5, "currency": "USD"}, "amount"),
        ({"amount": 0, "currency": "USD"}, "amount"),
        ({"amount": 10, "currency": "EUR"}, "currency"),
        ({"amount": 10, "currency": "USD", "expires_in_seconds": 0}, "expires_in_seconds"),
        ({"amount": 10, "currency": "USD", "expires_in_seconds": "9"}, "expires_in_seconds"),
    ],
)
def test_bad_hold_input_is_a_422_naming_the_field(
    client: FlaskClient, cid: str, body: dict, field: str
) -> None:
    r = client.post(holds_url(cid), json=body, headers=AUTH)
    assert r.status_code == 422, r.json
    assert r.json["field"].startswith(field)


def test_a_hold_for_an_unknown_customer_is_404(client: FlaskClient) -> None:
    r = client.post(holds_url("cus_nope"), json={"amount": 1, "currency": "USD"}, headers=AUTH)
    assert (r.status_code, r.json["code"]) == (404, "CUSTOMER_NOT_FOUND")
