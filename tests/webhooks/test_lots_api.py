"""Reading lots over HTTP (Flask's test client, SQLite and PostgreSQL): one entry with its
lots, the lot list, the wallets' expiry summary, and their place in /openapi.json."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import pytest
from flask.testing import FlaskClient

from tests.support.lots import DAY, credit, debit, expire, expiring_lot, wait_until_past
from webhooks import create_app
from worker.config import Settings
from worker.models import utcnow

AUTH = {"Authorization": "Bearer test-key"}


@pytest.fixture
def client(settings: Settings) -> Iterator[FlaskClient]:
    """A test client of the app on the test database, bootstrap key ``test-key``."""
    yield create_app(settings).test_client()


def new_customer(client: FlaskClient, email: str) -> str:
    r = client.post("/customers", json={"email": email, "name": "Lots"}, headers=AUTH)
    assert r.status_code == 200
    return r.json["customer_id"]


@pytest.fixture
def customer_id(client: FlaskClient) -> str:
    return new_customer(client, "lots@example.com")


def entry_url(customer_id: str, entry_id: str) -> str:
    return f"/customers/{customer_id}/wallets/ledger-entries/{entry_id}"


def lots_url(customer_id: str, query: str = "") -> str:
    return f"/customers/{customer_id}/wallets/credit-lots" + (f"?{query}" if query else "")


def assert_error(response, status: int, code: str, field: str | None = None) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.json
    assert body["code"] == code
    if field is not None:
        assert body["field"] == field
        assert body["message"].startswith(f"{field}: ")
    return body


def z(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


# -- GET .../ledger-entries/{entry_id} -------------------------------------------------------


def test_debit_detail_is_the_list_item_plus_the_lots_it_took(
    client: FlaskClient, tx, customer_id
) -> None:
    _, never = credit(tx, customer_id, 100)
    _, promo = credit(tx, customer_id, 100, expires_at=utcnow() + DAY, category="promotional")
    spent = debit(tx, customer_id, 130, reason="usage")
    r = client.get(entry_url(customer_id, spent.entry.id), headers=AUTH)
    assert r.status_code == 200
    listed = client.get(f"/customers/{customer_id}/wallets/ledger-entries", headers=AUTH)
    item = next(e for e in listed.json["items"] if e["id"] == spent.entry.id)
    detail = r.json
    assert {k: v for k, v in detail.items() if k not in ("consumed_lots", "lot")} == item
    assert detail["consumed_lots"] == [
        {"lot_id": promo, "amount": 100},
        {"lot_id": never, "amount": 30},
    ]
    assert sum(c["amount"] for c in detail["consumed_lots"]) == detail["amount"] == 130
    assert detail["lot"] is None


def test_credit_detail_carries_its_lot(client: FlaskClient, tx, customer_id) -> None:
    expires = utcnow() + DAY
    posted, lot_id = credit(tx, customer_id, 800, expires_at=expires, category="promotional")
    debit(tx, customer_id, 300)
    r = client.get(entry_url(customer_id, posted.entry.id), headers=AUTH)
    assert r.status_code == 200
    lot = r.json["lot"]
    assert lot == {
        "lot_id": lot_id,
        "currency": "USD",
        "amount": 800,
        "remaining": 500,
        "expired": 0,
        "category": "promotional",
        "expires_at": z(expires),
        "created_at": lot["created_at"],
        "status": "active",
        "entry_id": posted.entry.id,
    }
    assert lot["created_at"].endswith("Z")
    assert r.json["consumed_lots"] is None and r.json["is_credit"] is True


def test_expired_lot_shows_expired_on_its_credit(client: FlaskClient, tx, customer_id) -> None:
    lot_id, moment = expiring_lot(tx, customer_id, 40)
    wait_until_past(moment)
    expiration = expire(tx, customer_id, lot_id)
    r = client.get(entry_url(customer_id, expiration.entry.id), headers=AUTH)
    assert r.json["event_type"] == "expiration"
    assert r.json["consumed_lots"] == [{"lot_id": lot_id, "amount": 40}]
    lots = client.get(lots_url(customer_id), headers=AUTH).json["items"]
    assert [(x["lot_id"], x["remaining"], x["expired"], x["status"]) for x in lots] == [
        (lot_id, 0, 40, "expired")
    ]


def test_entry_of_another_customer_is_404_like_an_unknown_one(
    client: FlaskClient, tx, customer_id
) -> None:
    other = new_customer(client, "other@example.com")
    theirs, _ = credit(tx, other, 100)
    leaked = client.get(entry_url(customer_id, theirs.entry.id), headers=AUTH)
    unknown = client.get(entry_url(customer_id, "wle_unknown"), headers=AUTH)
    body = assert_error(leaked, 404, "LEDGER_ENTRY_NOT_FOUND")
    assert body == {
        "code": "LEDGER_ENTRY_NOT_FOUND",
        "message": f"Ledger entry {theirs.entry.id} not found",
        "entry_id": theirs.entry.id,
    }
    assert assert_error(unknown, 404, "LEDGER_ENTRY_NOT_FOUND")["entry_id"] == "wle_unknown"
    assert client.get(entry_url(other, theirs.entry.id), headers=AUTH).status_code == 200
    assert_error(
        client.get(entry_url("cus_nobody", theirs.entry.id), headers=AUTH),
        404,
        "CUSTOMER_NOT_FOUND",
    )


def test_entry_id_with_nul_is_422_naming_it(client: FlaskClient, customer_id) -> None:
    assert_error(
        client.get(entry_url(customer_id, "wle_%00"), headers=AUTH),
        422,
        "VALIDATION_ERROR",
        "entry_id",
    )


def test_entry_detail_needs_an_api_key(client: FlaskClient, tx, customer_id) -> None:
    posted, _ = credit(tx, customer_id, 100)
    assert_error(client.get(entry_url(customer_id, posted.entry.id)), 401, "UNAUTHORIZED")
    assert_error(client.get(lots_url(customer_id)), 401, "UNAUTHORIZED")


# -- GET .../credit-lots ---------------------------------------------------------------------


def test_lots_by_status_newest_first(client: FlaskClient, tx, customer_id) -> None:
    left, moment = expiring_lot(tx, customer_id, 50)
    wait_until_past(moment)  # expired, its expiration not yet written
    _, spent = credit(tx, customer_id, 20)
    debit(tx, customer_id, 20)
    _, active = credit(tx, customer_id, 300, category="promotional")
    every = client.get(lots_url(customer_id), headers=AUTH).json["items"]
    assert [(x["lot_id"], x["status"]) for x in every] == [
        (active, "active"),
        (spent, "consumed"),
        (left, "expired"),
    ]
    assert set(every[0]) == {
        "lot_id",
        "currency",
        "amount",
        "remaining",
        "expired",
        "category",
        "expires_at",
        "created_at",
        "status",
        "entry_id",
    }
    assert every[0]["expires_at"] is None and every[0]["category"] == "promotional"
    for status, expected in (("active", active), ("consumed", spent), ("expired", left)):
        items = client.get(lots_url(customer_id, f"status={status}"), headers=AUTH).json["items"]
        assert [x["lot_id"] for x in items] == [expected]


def test_lots_page_and_filter_by_currency(client: FlaskClient, tx, customer_id) -> None:
    amounts = list(range(1, 13))
    for amount in amounts:
        credit(tx, customer_id, amount)
    credit(tx, customer_id, 5000, currency="INR")

    def page(query: str) -> list[int]:
        return [
            x["amount"]
            for x in client.get(lots_url(customer_id, query), headers=AUTH).json["items"]
        ]

    assert page("currency=USD") == amounts[::-1][:10]  # default page 0, size 10
    assert page("currency=USD&page_number=1") == [2, 1]
    assert page("currency=USD&page_number=1&page_size=5") == [7, 6, 5, 4, 3]
    assert page("currency=INR") == [5000]
    assert page("page_size=100") == [5000, *amounts[::-1]]
    assert page("page_number=9") == []


@pytest.mark.parametrize(
    ("query", "field", "code"),
    [
        ("status=live", "status", "VALIDATION_ERROR"),
        ("status=", "status", "VALIDATION_ERROR"),
        ("status=active&status=expired", "status", "VALIDATION_ERROR"),
        ("currency=EUR", "currency", "UNSUPPORTED_CURRENCY"),
        ("currency=usd", "currency", "VALIDATION_ERROR"),
        ("page_size=101", "page_size", "VALIDATION_ERROR"),
        ("page_number=-1", "page_number", "VALIDATION_ERROR"),
    ],
)
def test_bad_lot_query_is_422_naming_the_field(client, customer_id, query, field, code) -> None:
    assert_error(client.get(lots_url(customer_id, query), headers=AUTH), 422, code, field)


def test_lots_of_an_unknown_customer_are_404(client: FlaskClient) -> None:
    assert_error(client.get(lots_url("cus_nobody"), headers=AUTH), 404, "CUSTOMER_NOT_FOUND")


# -- GET .../wallets -------------------------------------------------------------------------


def test_wallets_show_what_expires_soon_and_when(client: FlaskClient, tx, customer_id) -> None:
    soonest = utcnow() + DAY
    credit(tx, customer_id, 100, expires_at=soonest)
    credit(tx, customer_id, 250, expires_at=soonest + 2 * DAY, category="promotional")
    credit(tx, customer_id, 900, expires_at=soonest + 60 * DAY)
    credit(tx, customer_id, 1000)
    credit(tx, customer_id, 7000, currency="INR")
    r = client.get(f"/customers/{customer_id}/wallets", headers=AUTH)
    assert r.status_code == 200
    usd, inr = r.json["items"]
    assert (usd["currency"], usd["balance"], usd["expiring_soon"]) == ("USD", 2250, 350)
    assert usd["next_expiry_at"] == z(soonest)
    assert (inr["currency"], inr["balance"], inr["expiring_soon"]) == ("INR", 7000, 0)
    assert inr["next_expiry_at"] is None
    assert r.json["total_balance_usd"] == 2250 + 84  # INR at the default rate


def test_new_wallets_expire_nothing(client: FlaskClient, customer_id) -> None:
    items = client.get(f"/customers/{customer_id}/wallets", headers=AUTH).json["items"]
    assert [(w["expiring_soon"], w["next_expiry_at"]) for w in items] == [(0, None), (0, None)]


# -- /openapi.json ---------------------------------------------------------------------------


def test_openapi_documents_the_lot_routes(client: FlaskClient) -> None:
    doc = client.get("/openapi.json").json
    paths, schemas = doc["paths"], doc["components"]["schemas"]
    detail = paths["/customers/{customer_id}/wallets/ledger-entries/{entry_id}"]["get"]
    lots = paths["/customers/{customer_id}/wallets/credit-lots"]["get"]
    for operation in (detail, lots):
        assert {"200", "401", "404", "422"} <= set(operation["responses"])
        assert operation["security"] == [{"bearerAuth": []}]
    assert detail["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/LedgerEntryDetailOut"
    )
    assert {p["name"] for p in detail["parameters"]} == {"customer_id", "entry_id"}
    assert {p["name"] for p in lots["parameters"]} == {
        "customer_id",
        "currency",
        "status",
        "page_number",
        "page_size",
    }
    status = next(p for p in lots["parameters"] if p["name"] == "status")
    assert status["schema"]["enum"] == ["active", "expired", "consumed"]
    assert {"consumed_lots", "lot", "id", "amount"} <= set(
        schemas["LedgerEntryDetailOut"]["properties"]
    )
    lot = schemas["LotOut"]
    assert set(lot["required"]) >= {"lot_id", "remaining", "status", "expires_at", "entry_id"}
    assert lot["properties"]["status"]["enum"] == ["active", "expired", "consumed"]
    assert lot["properties"]["remaining"]["type"] == "integer"
    summary = schemas["WalletSummaryOut"]["properties"]
    assert summary["expiring_soon"]["type"] == "integer"
    assert {"type": "null"} in summary["next_expiry_at"]["anyOf"]
    items = schemas["WalletListOut"]["properties"]["items"]["items"]
    assert items["$ref"].endswith("/WalletSummaryOut")


def test_credit_posted_over_http_with_an_expiry_reads_back_as_its_lot(
    client: FlaskClient, customer_id
) -> None:
    expires = "2099-01-31T00:00:00Z"
    body = {"amount": 600, "currency": "USD", "entry_type": "credit", "reason": "promo"}
    posted = client.post(
        f"/customers/{customer_id}/wallets/ledger-entries",
        json={**body, "expires_at": expires, "category": "promotional"},
        headers=AUTH,
    )
    assert posted.status_code == 200, posted.get_data(as_text=True)
    entries = client.get(f"/customers/{customer_id}/wallets/ledger-entries", headers=AUTH)
    entry_id = entries.json["items"][0]["id"]
    lot = client.get(entry_url(customer_id, entry_id), headers=AUTH).json["lot"]
    assert (lot["amount"], lot["category"], lot["expires_at"], lot["status"]) == (
        600,
        "promotional",
        expires,
        "active",
    )
    listed = client.get(lots_url(customer_id, "status=active"), headers=AUTH).json["items"]
    assert listed == [lot]
    wallet = client.get(f"/customers/{customer_id}/wallets", headers=AUTH).json["items"][0]
    assert (wallet["expiring_soon"], wallet["next_expiry_at"]) == (0, expires)  # beyond 7 days
