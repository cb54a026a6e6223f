"""The report routes over HTTP (Flask's test client, SQLite and PostgreSQL): shapes, CSV and
NDJSON, 422s naming the field, the read scope, and their place in /openapi.json."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from flask.testing import FlaskClient

from tests.support.ledger_clock import post_at
from webhooks import create_app
from worker.config import Settings
from worker.infra.db import transaction

AUTH = {"Authorization": "Bearer test-key"}
BASE = datetime(2026, 3, 7, 15, tzinfo=UTC)


@pytest.fixture
def client(settings: Settings) -> Iterator[FlaskClient]:
    """A test client of the app on the test database, bootstrap key ``test-key``."""
    yield create_app(settings).test_client()


@pytest.fixture
def customer_id(client: FlaskClient, settings: Settings) -> str:
    """A customer with three USD entries over New York's DST change and one INR entry."""
    r = client.post("/customers", json={"email": "rep@example.com", "name": "R"}, headers=AUTH)
    cid = r.json["customer_id"]
    tx = lambda: transaction(settings)  # noqa: E731
    post_at(tx, BASE, cid, 10000, credit=True, event_type="payment", reason="top-up")
    post_at(tx, BASE + timedelta(days=1), cid, 1234, credit=False, event_type="usage")
    post_at(tx, BASE + timedelta(days=2), cid, 66, credit=False, reason="fee")
    post_at(tx, BASE, cid, 500, credit=True, currency="INR")
    return cid


def url(customer_id: str, tail: str) -> str:
    return f"/customers/{customer_id}/wallets/{tail}"


def assert_422(response, field: str) -> None:
    assert response.status_code == 422, response.get_data(as_text=True)
    assert response.json["field"] == field
    assert response.json["message"].startswith(f"{field}: ")


def test_analytics_answers_buckets_in_the_time_zone(client: FlaskClient, customer_id: str) -> None:
    r = client.get(
        url(
            customer_id,
            "analytics?currency=USD&from=2026-03-07&to=2026-03-10"
            "&tz=America/New_York&group_by=event_type",
        ),
        headers=AUTH,
    )
    assert r.status_code == 200, r.json
    assert r.json["from"] == "2026-03-07T00:00:00-05:00"
    assert r.json["to"] == "2026-03-10T00:00:00-04:00"
    assert [
        (b["start"], b["group"], b["credits"], b["debits"], b["net"], b["count"])
        for b in r.json["buckets"]
    ] == [
        ("2026-03-07T00:00:00-05:00", "payment", 10000, 0, 10000, 1),
        ("2026-03-08T00:00:00-05:00", "usage", 0, 1234, -1234, 1),
        ("2026-03-09T00:00:00-04:00", "merchant_adjustment", 0, 66, -66, 1),
    ]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("currency=USD&from=2026-03-09&to=2026-03-08", "from"),
        ("currency=USD&from=2026-03-01&to=2026-03-02&tz=Nowhere/Land", "tz"),
        ("currency=USD&from=2026-01-01&to=2027-01-03", "to"),
        ("currency=USD&from=2026-03-01&to=2026-03-02&interval=hour", "interval"),
        ("currency=USD&from=2026-03-01&to=2026-03-02&group_by=colour", "group_by"),
        ("currency=USD&from=yesterday&to=2026-03-02", "from"),
        ("currency=USD&from=2026-03-01T00:00:00&to=2026-03-02", "from"),
        ("currency=EUR&from=2026-03-01&to=2026-03-02", "currency"),
        ("from=2026-03-01&to=2026-03-02", "currency"),
    ],
)
def test_analytics_refuses_a_bad_query_naming_the_field(
    client: FlaskClient, customer_id: str, query: str, field: str
) -> None:
    assert_422(client.get(url(customer_id, f"analytics?{query}"), headers=AUTH), field)


def test_366_day_buckets_are_served(client: FlaskClient, customer_id: str) -> None:
    r = client.get(
        url(customer_id, "analytics?currency=USD&from=2028-01-01&to=2029-01-01"), headers=AUTH
    )
    assert r.status_code == 200 and r.json["buckets"] == []


def test_an_unknown_customer_is_404(client: FlaskClient) -> None:
    r = client.get(url("cus_nobody", "balance?currency=USD&at=2026-03-01T00:00:00Z"), headers=AUTH)
    assert r.status_code == 404 and r.json["code"] == "CUSTOMER_NOT_FOUND"
    r = client.get(url("cus_nobody", "ledger-entries/export"), headers=AUTH)
    assert r.status_code == 404 and r.mimetype == "application/json"


def test_balance_at_reads_the_last_entry_at_or_before(
    client: FlaskClient, customer_id: str
) -> None:
    at = (BASE + timedelta(days=1)).isoformat().replace("+00:00", "Z")
    r = client.get(url(customer_id, f"balance?currency=USD&at={at}"), headers=AUTH)
    assert r.status_code == 200
    assert (r.json["balance"], r.json["at"], r.json["currency"]) == (8766, at, "USD")
    assert r.json["entry_id"].startswith("wle_")
    early = client.get(
        url(customer_id, "balance?currency=USD&at=2026-01-01T00:00:00Z"), headers=AUTH
    )
    assert (early.json["balance"], early.json["entry_id"]) == (0, None)
    assert_422(
        client.get(url(customer_id, "balance?currency=USD&at=2026-01-01"), headers=AUTH), "at"
    )


def test_statement_json_and_csv_say_the_same(client: FlaskClient, customer_id: str) -> None:
    q = "currency=USD&from=2026-03-08&to=2026-04-01"
    r = client.get(url(customer_id, f"statement?{q}"), headers=AUTH)
    assert r.status_code == 200
    body = r.json
    assert (body["opening_balance"], body["total_credits"], body["total_debits"]) == (
        10000,
        0,
        1300,
    )
    assert body["closing_balance"] == 8700 and body["expired"] == 0 and body["entry_count"] == 2
    assert body["from"] == "2026-03-08T00:00:00Z" and body["next_cursor"] is None
    for request in (
        {"query": f"{q}&format=csv", "headers": AUTH},
        {"query": q, "headers": {**AUTH, "Accept": "text/csv"}},
    ):
        r = client.get(
            url(customer_id, f"statement?{request['query']}"), headers=request["headers"]
        )
        assert r.status_code == 200 and r.mimetype == "text/csv"
        rows = list(csv.DictReader(io.StringIO(r.get_data(as_text=True), newline="")))
        assert [row["kind"] for row in rows] == ["opening", "entry", "entry", "closing"]
        assert int(rows[0]["after_balance"]) == body["opening_balance"]
        assert int(rows[-1]["after_balance"]) == body["closing_balance"]
        assert [row["id"] for row in rows[1:-1]] == [e["id"] for e in body["entries"]]


def test_statement_pages_entries_with_a_cursor(client: FlaskClient, customer_id: str) -> None:
    q = "currency=USD&from=2026-03-01&to=2026-04-01&limit=2"
    first = client.get(url(customer_id, f"statement?{q}"), headers=AUTH).json
    assert len(first["entries"]) == 2 and first["next_cursor"]
    rest = client.get(
        url(customer_id, f"statement?{q}&cursor={first['next_cursor']}"), headers=AUTH
    ).json
    assert len(rest["entries"]) == 1 and rest["next_cursor"] is None
    assert_422(client.get(url(customer_id, f"statement?{q}&cursor=abc"), headers=AUTH), "cursor")
    assert_422(client.get(url(customer_id, f"statement?{q[:-7]}&limit=0"), headers=AUTH), "limit")


def test_export_csv_parses_back_to_the_api_entries(client: FlaskClient, customer_id: str) -> None:
    r = client.get(url(customer_id, "ledger-entries/export"), headers=AUTH)
    assert r.status_code == 200 and r.mimetype == "text/csv"
    assert r.headers["Content-Disposition"] == 'attachment; filename="ledger-entries.csv"'
    rows = list(csv.DictReader(io.StringIO(r.get_data(as_text=True), newline="")))
    listed = client.get(url(customer_id, "ledger-entries?page_size=100"), headers=AUTH).json[
        "items"
    ]
    assert [row["id"] for row in rows] == [e["id"] for e in reversed(listed)]
    for row, entry in zip(rows, reversed(listed), strict=True):
        assert row["amount"] == str(entry["amount"])
        assert row["after_balance"] == str(entry["after_balance"])
        assert row["created_at"] == entry["created_at"]
        assert row["reason"] == (entry["reason"] or "")
        assert row["is_credit"] == ("true" if entry["is_credit"] else "false")


def test_export_ndjson_of_one_currency_and_period(client: FlaskClient, customer_id: str) -> None:
    r = client.get(
        url(customer_id, "ledger-entries/export?currency=USD&from=2026-03-08&format=ndjson"),
        headers=AUTH,
    )
    assert r.status_code == 200 and r.mimetype == "application/x-ndjson"
    lines = [json.loads(line) for line in r.get_data(as_text=True).splitlines()]
    assert [(x["amount"], x["currency"], x["is_credit"]) for x in lines] == [
        (1234, "USD", False),
        (66, "USD", False),
    ]
    assert_422(
        client.get(url(customer_id, "ledger-entries/export?format=xml"), headers=AUTH), "format"
    )
    assert_422(
        client.get(
            url(customer_id, "ledger-entries/export?from=2026-03-09&to=2026-03-08"), headers=AUTH
        ),
        "from",
    )


def test_summary_is_business_wide(client: FlaskClient, customer_id: str) -> None:
    r = client.get("/analytics/summary?from=2026-03-01&to=2026-04-01", headers=AUTH)
    assert r.status_code == 200
    usd = r.json["currencies"][0]
    assert usd["currency"] == "USD"
    assert usd["credited"] == {"payment": 10000}
    assert usd["debited"] == {"merchant_adjustment": 66, "usage": 1234}
    assert usd["liability"] == 8700
    assert usd["expired"] == {"paid": 0, "promotional": 0}
    assert (usd["unbilled_usage"], usd["pending_usage"]) == (0, "0")
    assert usd["held"] == 0
    assert_422(client.get("/analytics/summary?from=2026-04-01&to=2026-03-01", headers=AUTH), "from")
    assert_422(client.get("/analytics/summary?to=2026-03-01", headers=AUTH), "from")


def test_report_routes_need_the_read_scope_only(client: FlaskClient, customer_id: str, cli) -> None:
    created = cli("apikeys", "create", "--scope", "debit", "--json")
    debit_only = {"Authorization": f"Bearer {json.loads(created.out)['key']}"}
    created = cli("apikeys", "create", "--scope", "read", "--json")
    reader = {"Authorization": f"Bearer {json.loads(created.out)['key']}"}
    paths = [
        url(customer_id, "analytics?currency=USD&from=2026-03-01&to=2026-03-02"),
        url(customer_id, "balance?currency=USD&at=2026-03-01T00:00:00Z"),
        url(customer_id, "statement?currency=USD&from=2026-03-01&to=2026-03-02"),
        url(customer_id, "ledger-entries/export"),
        "/analytics/summary?from=2026-03-01&to=2026-03-02",
    ]
    for path in paths:
        refused = client.get(path, headers=debit_only)
        assert refused.status_code == 403 and refused.json["required_scope"] == "read"
        assert client.get(path, headers=reader).status_code == 200


def test_openapi_documents_every_report_route_with_an_example(client: FlaskClient) -> None:
    spec = client.get("/openapi.json").json
    routes = {
        "/customers/{customer_id}/wallets/analytics": "application/json",
        "/customers/{customer_id}/wallets/balance": "application/json",
        "/customers/{customer_id}/wallets/statement": "text/csv",
        "/customers/{customer_id}/wallets/ledger-entries/export": "text/csv",
        "/analytics/summary": "application/json",
    }
    for path, media in routes.items():
        ok = spec["paths"][path]["get"]["responses"]["200"]["content"]
        assert "example" in ok[media], path
    export = spec["paths"]["/customers/{customer_id}/wallets/ledger-entries/export"]["get"]
    assert "example" in export["responses"]["200"]["content"]["application/x-ndjson"]
