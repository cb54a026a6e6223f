"""The wallet charge and refund routes through the Flask test client, on both backends."""

from __future__ import annotations

import pytest

from tests.support.charges import assert_verified, paid
from webhooks import create_app

AUTH = {"Authorization": "Bearer test-key"}


@pytest.fixture
def client(settings):
    """A test client of the app on the test database, refunds capped at 10000."""
    return create_app(settings.with_overrides(wallet_refund_max=10_000)).test_client()


@pytest.fixture
def customer(client) -> str:
    """A customer with 3000 USD cents."""
    cid = client.post(
        "/customers", json={"email": "ada@example.com", "name": "Ada"}, headers=AUTH
    ).json["customer_id"]
    credited = client.post(
        f"/customers/{cid}/wallets/ledger-entries",
        json={"amount": 3000, "currency": "USD", "entry_type": "credit"},
        headers=AUTH,
    )
    assert credited.status_code == 200
    return cid


def post(client, path: str, body=None):
    return client.post(path, json=body, headers=AUTH)


def test_charge_answers_applied_and_remaining_amounts(client, customer, tx) -> None:
    r = post(client, f"/customers/{customer}/wallets/charges", {
        "amount": 5000, "currency": "USD", "order_id": "order_1", "reason": "Order 1"
    })  # fmt: skip
    assert r.status_code == 200
    assert "Idempotent-Replayed" not in r.headers
    body = r.json
    assert (body["applied_amount"], body["remaining_amount"], body["requested_amount"]) == (
        3000,
        2000,
        5000,
    )
    assert body["wallet"]["balance"] == 0
    assert body["charge_id"].startswith("wch_")
    [entry] = body["entries"]
    assert (entry["event_type"], entry["amount"], entry["reference_object_id"]) == (
        "payment",
        3000,
        "order_1",
    )
    assert_verified(tx)


def test_retried_charge_replays_with_header_and_same_body(client, customer) -> None:
    body = {"amount": 1000, "currency": "USD", "order_id": "order_1"}
    first = post(client, f"/customers/{customer}/wallets/charges", body)
    again = post(client, f"/customers/{customer}/wallets/charges", body)
    assert again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json == first.json
    assert again.json["wallet"]["balance"] == 2000


def test_charge_with_same_key_and_other_amount_is_422_naming_it(client, customer) -> None:
    post(client, f"/customers/{customer}/wallets/charges", {
        "amount": 1000, "currency": "USD", "order_id": "o1"
    })  # fmt: skip
    r = post(client, f"/customers/{customer}/wallets/charges", {
        "amount": 1001, "currency": "USD", "order_id": "o1"
    })  # fmt: skip
    assert r.status_code == 422
    assert (r.json["code"], r.json["differing_fields"]) == ("IDEMPOTENCY_KEY_REUSED", ["amount"])


def test_all_or_nothing_charge_beyond_balance_is_400(client, customer) -> None:
    r = post(client, f"/customers/{customer}/wallets/charges", {
        "amount": 3001, "currency": "USD", "order_id": "o1", "allow_partial": False
    })  # fmt: skip
    assert r.status_code == 400
    assert (r.json["code"], r.json["balance"]) == ("INSUFFICIENT_BALANCE", 3000)


def test_empty_wallet_charge_applies_zero(client, customer) -> None:
    r = post(client, f"/customers/{customer}/wallets/charges", {
        "amount": 700, "currency": "INR", "order_id": "o1"
    })  # fmt: skip
    assert r.status_code == 200
    assert (r.json["applied_amount"], r.json["remaining_amount"], r.json["entries"]) == (
        0,
        700,
        [],
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"amount": 10.5, "currency": "USD", "order_id": "o"}, "amount"),
        ({"amount": "100", "currency": "USD", "order_id": "o"}, "amount"),
        ({"amount": 0, "currency": "USD", "order_id": "o"}, "amount"),
        ({"amount": 100, "currency": "USD"}, "order_id"),
        ({"amount": 100, "currency": "USD", "order_id": ""}, "order_id"),
        ({"amount": 100, "currency": "EUR", "order_id": "o"}, "currency"),
        (
            {"amount": 100, "currency": "USD", "order_id": "o", "allow_partial": "no"},
            "allow_partial",
        ),
    ],
)
def test_bad_charge_body_is_422_naming_the_field(client, customer, body, field) -> None:
    r = post(client, f"/customers/{customer}/wallets/charges", body)
    assert r.status_code == 422
    assert r.json["field"] == field


def test_malformed_json_is_400_and_missing_key_is_401(client, customer) -> None:
    r = client.post(
        f"/customers/{customer}/wallets/charges",
        data=b"{nope",
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert (r.status_code, r.json["code"]) == (400, "MALFORMED_JSON")
    r = client.post(f"/customers/{customer}/wallets/charges", json={})
    assert r.status_code == 401


def test_charge_for_unknown_customer_is_404(client) -> None:
    r = post(client, "/customers/cus_nope/wallets/charges", {
        "amount": 1, "currency": "USD", "order_id": "o"
    })  # fmt: skip
    assert (r.status_code, r.json["code"]) == (404, "CUSTOMER_NOT_FOUND")


def test_reverse_without_body_gives_everything_back_once(client, customer, tx) -> None:
    charge = post(client, f"/customers/{customer}/wallets/charges", {
        "amount": 2000, "currency": "USD", "order_id": "o1"
    }).json  # fmt: skip
    path = f"/customers/{customer}/wallets/charges/{charge['charge_id']}/reverse"
    r = client.post(path, headers=AUTH)
    assert r.status_code == 200
    assert (r.json["reversed_now"], r.json["reversed_amount"], r.json["wallet"]["balance"]) == (
        2000,
        2000,
        3000,
    )
    assert r.json["reversal_entry"]["event_type"] == "payment_reversal"
    again = post(client, path, {})
    assert (again.status_code, again.json["reversed_now"], again.json["reversal_entry"]) == (
        200,
        0,
        None,
    )
    over = post(client, path, {"amount": 1})
    assert (over.status_code, over.json["code"], over.json["field"]) == (
        422,
        "REVERSAL_EXCEEDS_CHARGE",
        "amount",
    )
    assert_verified(tx)


def test_partial_reversal_with_key_replays(client, customer) -> None:
    charge = post(client, f"/customers/{customer}/wallets/charges", {
        "amount": 2000, "currency": "USD", "order_id": "o1"
    }).json  # fmt: skip
    path = f"/customers/{customer}/wallets/charges/{charge['charge_id']}/reverse"
    first = post(client, path, {"amount": 500, "idempotency_key": "r1"})
    again = post(client, path, {"amount": 500, "idempotency_key": "r1"})
    assert (first.json["reversed_now"], again.json["reversed_now"]) == (500, 0)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json["wallet"]["balance"] == 1500


def test_get_charge_shows_amounts_and_entries(client, customer) -> None:
    charge = post(client, f"/customers/{customer}/wallets/charges", {
        "amount": 5000, "currency": "USD", "order_id": "o1"
    }).json  # fmt: skip
    base = f"/customers/{customer}/wallets/charges/{charge['charge_id']}"
    post(client, base + "/reverse", {"amount": 1000, "reason": "item missing"})
    r = client.get(base, headers=AUTH)
    assert r.status_code == 200
    got = {k: r.json[k] for k in ("applied_amount", "reversed_amount", "remaining_amount")}
    assert got == {"applied_amount": 3000, "reversed_amount": 1000, "remaining_amount": 2000}
    assert r.json["reversible_amount"] == 2000
    assert [(e["event_type"], e["amount"], e["reason"]) for e in r.json["entries"]] == [
        ("payment", 3000, None),
        ("payment_reversal", 1000, "item missing"),
    ]
    missing = client.get(f"/customers/{customer}/wallets/charges/wch_nope", headers=AUTH)
    assert (missing.status_code, missing.json["code"]) == (404, "CHARGE_NOT_FOUND")


def test_refund_to_wallet_is_credited_once_per_refund_id(client, customer, tx) -> None:
    paid(tx, customer, 2500)
    body = {"amount": 2500, "currency": "USD", "payment_id": "pay_1", "refund_id": "rfd_1"}
    first = post(client, f"/customers/{customer}/wallets/refunds", body)
    again = post(client, f"/customers/{customer}/wallets/refunds", body)
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert first.json["entry"] == again.json["entry"]
    assert (first.json["entry"]["event_type"], first.json["entry"]["reference_object_id"]) == (
        "refund",
        "pay_1",
    )
    assert again.json["wallet"]["balance"] == 5500
    assert_verified(tx)


def test_refund_above_cap_is_422_naming_the_cap(client, customer) -> None:
    r = post(client, f"/customers/{customer}/wallets/refunds", {
        "amount": 10_001, "currency": "USD", "payment_id": "pay_1"
    })  # fmt: skip
    assert r.status_code == 422
    assert (r.json["code"], r.json["field"], r.json["cap"], r.json["setting"]) == (
        "WALLET_REFUND_CAP_EXCEEDED",
        "amount",
        10_000,
        "WALLET_REFUND_MAX",
    )
    assert "WALLET_REFUND_MAX" in r.json["message"]


def test_refund_past_the_payment_is_422_naming_amount_and_what_is_left(client, customer, tx):
    paid(tx, customer, 2500)
    body = {"amount": 2000, "currency": "USD", "payment_id": "pay_1"}
    assert post(client, f"/customers/{customer}/wallets/refunds", body).status_code == 200
    r = post(client, f"/customers/{customer}/wallets/refunds", {**body, "amount": 501})
    assert r.status_code == 422
    assert (r.json["code"], r.json["field"], r.json["remaining_amount"]) == (
        "REFUND_EXCEEDS_PAYMENT",
        "amount",
        500,
    )
    assert r.json["message"] == "amount: 501 USD exceeds the 500 left to refund of payment pay_1"
    assert_verified(tx)


def test_refund_of_an_unknown_payment_is_422_naming_payment_id(client, customer) -> None:
    r = post(client, f"/customers/{customer}/wallets/refunds", {
        "amount": 100, "currency": "USD", "payment_id": "pay_never_seen"
    })  # fmt: skip
    assert r.status_code == 422
    assert (r.json["code"], r.json["field"], r.json["payment_id"]) == (
        "UNKNOWN_PAYMENT",
        "payment_id",
        "pay_never_seen",
    )


def test_openapi_documents_every_route_and_status(client) -> None:
    paths = client.get("/openapi.json").json["paths"]
    expected = {
        ("post", "/customers/{customer_id}/wallets/charges"): {"200", "400", "401", "404", "422"},
        ("get", "/customers/{customer_id}/wallets/charges/{charge_id}"): {"200", "401", "404"},
        ("post", "/customers/{customer_id}/wallets/charges/{charge_id}/reverse"): {
            "200",
            "400",
            "401",
            "404",
            "422",
        },
        ("post", "/customers/{customer_id}/wallets/refunds"): {"200", "400", "401", "404", "422"},
    }
    for (method, path), statuses in expected.items():
        operation = paths[path][method]
        assert statuses <= set(operation["responses"]), (method, path)
        assert operation["security"] == [{"bearerAuth": []}]
