"""Expiring and promotional credit through the ledger-entries route, on SQLite and PostgreSQL:
the lot a credit creates, the 422s, and idempotency over the lot's terms."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from webhooks import create_app
from worker.config import Settings
from worker.models import CreditLot, LedgerEntry, LotConsumption, utcnow

AUTH = {"Authorization": "Bearer test-key"}


@pytest.fixture
def client(settings: Settings) -> Iterator[FlaskClient]:
    """A test client of the app on the test database, bootstrap key ``test-key``."""
    yield create_app(settings).test_client()


@pytest.fixture
def customer_id(client: FlaskClient) -> str:
    """A fresh customer's id."""
    r = client.post("/customers", json={"email": "ada@example.com", "name": "Ada"}, headers=AUTH)
    assert r.status_code == 200
    return r.json["customer_id"]


def post_entry(client: FlaskClient, customer_id: str, **body):
    body = {"currency": "USD", "entry_type": "credit", "amount": 1000, **body}
    return client.post(f"/customers/{customer_id}/wallets/ledger-entries", json=body, headers=AUTH)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def lots(tx, customer_id: str) -> list[CreditLot]:
    with tx() as s:
        return list(
            s.scalars(
                select(CreditLot)
                .where(CreditLot.customer_id == customer_id)
                .order_by(CreditLot.seq)
            )
        )


def entries(tx, customer_id: str) -> list[LedgerEntry]:
    with tx() as s:
        return list(
            s.scalars(
                select(LedgerEntry)
                .where(LedgerEntry.customer_id == customer_id)
                .order_by(LedgerEntry.seq)
            )
        )


def assert_422(response, code: str, field: str | None = None) -> dict:
    assert response.status_code == 422, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.json
    assert body["code"] == code
    if field is not None:
        assert body["field"] == field
        assert body["message"].startswith(f"{field}: ")
    return body


def test_credit_with_expiry_and_category_creates_that_lot(client, customer_id, tx) -> None:
    expires = (utcnow() + timedelta(days=30)).replace(microsecond=0)
    r = post_entry(
        client, customer_id, amount=2500, expires_at=rfc3339(expires), category="promotional"
    )
    assert (r.status_code, r.json["balance"]) == (200, 2500)
    [entry] = entries(tx, customer_id)
    [lot] = lots(tx, customer_id)
    assert (lot.entry_id, lot.amount, lot.remaining, lot.currency) == (entry.id, 2500, 2500, "USD")
    assert (lot.category, lot.expires_at) == ("promotional", expires)


def test_credit_without_terms_is_a_paid_lot_that_never_expires(client, customer_id, tx) -> None:
    assert post_entry(client, customer_id, amount=700).status_code == 200
    [lot] = lots(tx, customer_id)
    assert (lot.amount, lot.category, lot.expires_at) == (700, "paid", None)


def test_expiry_in_another_offset_is_stored_as_the_same_instant_in_utc(
    client, customer_id, tx
) -> None:
    r = post_entry(client, customer_id, expires_at="2031-06-01T12:00:00+05:30")
    assert r.status_code == 200
    [lot] = lots(tx, customer_id)
    assert lot.expires_at == datetime(2031, 6, 1, 6, 30, tzinfo=UTC)


def test_a_debit_spends_the_credit_that_expires_first(client, customer_id, tx) -> None:
    post_entry(client, customer_id, amount=1000)
    post_entry(client, customer_id, amount=300, expires_at=rfc3339(utcnow() + timedelta(days=9)))
    assert post_entry(client, customer_id, amount=200, entry_type="debit").json["balance"] == 1100
    never, soon = lots(tx, customer_id)
    assert (never.remaining, soon.remaining) == (1000, 100)
    with tx() as s:
        [taken] = s.scalars(select(LotConsumption))
        assert (taken.lot_id, taken.amount) == (soon.id, 200)


@pytest.mark.parametrize(
    "change, field",
    [
        ({"expires_at": "2020-01-01T00:00:00Z"}, "expires_at"),  # in the past
        ({"expires_at": "2031-01-01T00:00:00"}, "expires_at"),  # no offset
        ({"expires_at": "2031-01-01"}, "expires_at"),  # a date, not a timestamp
        ({"expires_at": "next year"}, "expires_at"),
        ({"expires_at": 1924992000}, "expires_at"),  # a Unix time
        ({"expires_at": "9999-12-31T23:59:59-23:59"}, "expires_at"),  # no UTC time
        ({"category": "gift"}, "category"),
        ({"category": "PAID"}, "category"),
        ({"category": 1}, "category"),
        ({"entry_type": "debit", "expires_at": "2031-01-01T00:00:00Z"}, "expires_at"),
        ({"entry_type": "debit", "category": "promotional"}, "category"),
        ({"entry_type": "debit", "category": "paid"}, "category"),
    ],
)
def test_bad_lot_terms_are_422_naming_the_field_and_write_nothing(
    client, customer_id, tx, change, field
) -> None:
    post_entry(client, customer_id, amount=5000)  # so a debit would otherwise succeed
    assert_422(post_entry(client, customer_id, **change), "VALIDATION_ERROR", field)
    assert len(entries(tx, customer_id)) == 1
    assert [lot.amount for lot in lots(tx, customer_id)] == [5000]


def test_expiry_now_or_a_moment_ago_is_in_the_past(client, customer_id, tx) -> None:
    r = post_entry(client, customer_id, expires_at=rfc3339(utcnow() - timedelta(seconds=1)))
    body = assert_422(r, "VALIDATION_ERROR", "expires_at")
    assert body["message"] == "expires_at: must be in the future"
    assert entries(tx, customer_id) == []


@pytest.mark.parametrize(
    "first, retry, differing",
    [
        (
            {"expires_at": "2031-01-01T00:00:00Z"},
            {"expires_at": "2031-01-02T00:00:00Z"},
            ["expires_at"],
        ),
        ({"expires_at": "2031-01-01T00:00:00Z"}, {}, ["expires_at"]),
        ({}, {"expires_at": "2031-01-01T00:00:00Z"}, ["expires_at"]),
        ({"category": "promotional"}, {}, ["category"]),
        ({"category": "promotional"}, {"category": "paid"}, ["category"]),
        ({}, {"category": "promotional"}, ["category"]),
        (
            {"category": "promotional", "expires_at": "2031-01-01T00:00:00Z"},
            {"amount": 999, "category": "paid", "expires_at": "2031-01-01T00:00:00Z"},
            ["amount", "category"],
        ),
    ],
)
def test_same_key_with_other_lot_terms_is_422_naming_them(
    client, customer_id, tx, first, retry, differing
) -> None:
    assert post_entry(client, customer_id, idempotency_key="grant-1", **first).status_code == 200
    r = post_entry(client, customer_id, idempotency_key="grant-1", **retry)
    body = assert_422(r, "IDEMPOTENCY_KEY_REUSED")
    assert body["differing_fields"] == differing
    assert len(entries(tx, customer_id)) == 1


@pytest.mark.parametrize(
    "first, retry",
    [
        # The same instant written in another offset.
        ({"expires_at": "2031-01-01T00:00:00Z"}, {"expires_at": "2031-01-01T05:30:00+05:30"}),
        ({"expires_at": "2031-01-01T00:00:00Z"}, {"expires_at": "2031-01-01T00:00:00.000000z"}),
        # paid is the default, named or not.
        ({}, {"category": "paid"}),
        ({"category": "paid"}, {}),
        (
            {"category": "promotional", "expires_at": "2031-01-01T00:00:00Z"},
            {"category": "promotional", "expires_at": "2031-01-01T00:00:00Z"},
        ),
    ],
)
def test_same_key_with_the_same_lot_terms_is_a_duplicate(
    client, customer_id, tx, first, retry
) -> None:
    assert post_entry(client, customer_id, idempotency_key="grant-1", **first).status_code == 200
    r = post_entry(client, customer_id, idempotency_key="grant-1", **retry)
    assert (r.status_code, r.json["code"]) == (409, "DUPLICATE_IDEMPOTENCY_KEY")
    assert r.json["wallet"]["balance"] == 1000
    assert len(lots(tx, customer_id)) == 1


def test_openapi_documents_the_lot_terms(client) -> None:
    schema = client.get("/openapi.json").json["components"]["schemas"]["LedgerEntryCreate"]
    expires_at = schema["properties"]["expires_at"]
    assert {"type": "string", "format": "date-time"} in expires_at["anyOf"]
    category = schema["properties"]["category"]
    assert {"enum": ["paid", "promotional"], "type": "string"} in category["anyOf"]
    assert "expires_at" not in schema["required"] and "category" not in schema["required"]
