"""The wallet HTTP API through Flask's test client, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from flask.testing import FlaskClient
from limits import RateLimitItemPerMinute
from sqlalchemy import event, update

from webhooks import create_app
from worker import ledger
from worker.access import apikeys
from worker.config import Settings
from worker.infra.db import autocommit_engine, get_engine
from worker.models import ApiKey, utcnow

AUTH = {"Authorization": "Bearer test-key"}
MISSING = object()
THREADS = 8


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


def entries_url(customer_id: str) -> str:
    return f"/customers/{customer_id}/wallets/ledger-entries"


def post_entry(client: FlaskClient, customer_id: str, **body):
    body = {"currency": "USD", "entry_type": "credit", **body}
    return client.post(entries_url(customer_id), json=body, headers=AUTH)


def assert_error(response, status: int, code: str, field: str | None = None) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.json
    assert body["code"] == code
    assert isinstance(body["message"], str) and body["message"]
    if field is not None:
        assert body["field"] == field
        assert body["message"].startswith(f"{field}: ")
    return body


# -- customers ------------------------------------------------------------------------------


def test_create_customer_returns_dodo_fields(client: FlaskClient) -> None:
    r = client.post(
        "/customers",
        json={
            "email": "ada@example.com",
            "name": "Ada",
            "phone_number": "+15550100",
            "metadata": {"plan": "pro", "seats": 3, "beta": True},
        },
        headers=AUTH,
    )
    assert r.status_code == 200
    body = r.json
    assert set(body) >= {
        "customer_id",
        "business_id",
        "email",
        "name",
        "phone_number",
        "metadata",
        "created_at",
    }
    assert body["customer_id"].startswith("cus_")
    assert body["business_id"] == "bus_local"
    assert (body["email"], body["name"], body["phone_number"]) == (
        "ada@example.com",
        "Ada",
        "+15550100",
    )
    assert body["metadata"] == {"plan": "pro", "seats": 3, "beta": True}
    assert body["created_at"].endswith("Z")


def test_create_customer_creates_zero_balance_wallets(client: FlaskClient, customer_id) -> None:
    r = client.get(f"/customers/{customer_id}/wallets", headers=AUTH)
    assert r.status_code == 200
    assert [(w["currency"], w["balance"]) for w in r.json["items"]] == [("USD", 0), ("INR", 0)]
    assert r.json["total_balance_usd"] == 0
    for wallet in r.json["items"]:
        assert wallet["customer_id"] == customer_id
        assert set(wallet) >= {"balance", "currency", "customer_id", "created_at", "updated_at"}


def test_create_customer_with_known_email_returns_that_customer(
    client: FlaskClient, customer_id
) -> None:
    r = client.post("/customers", json={"email": "ADA@example.com", "name": "Other"}, headers=AUTH)
    assert r.status_code == 200
    assert r.json["customer_id"] == customer_id
    assert r.json["name"] == "Ada"


def test_get_customer(client: FlaskClient, customer_id) -> None:
    r = client.get(f"/customers/{customer_id}", headers=AUTH)
    assert r.status_code == 200
    assert r.json["customer_id"] == customer_id
    assert r.json["email"] == "ada@example.com"


@pytest.mark.parametrize(
    "method, suffix",
    [
        ("get", ""),
        ("patch", ""),
        ("get", "/wallets"),
        ("get", "/wallets/ledger-entries"),
        ("post", "/wallets/ledger-entries"),
    ],
)
def test_unknown_customer_is_404_on_every_route(client: FlaskClient, method, suffix) -> None:
    kwargs = {"headers": AUTH}
    if method in ("post", "patch"):
        kwargs["json"] = (
            {"amount": 1, "currency": "USD", "entry_type": "credit"}
            if method == "post"
            else {"name": "X"}
        )
    r = getattr(client, method)(f"/customers/cus_missing{suffix}", **kwargs)
    body = assert_error(r, 404, "CUSTOMER_NOT_FOUND")
    assert body["customer_id"] == "cus_missing"


def test_list_customers_pages_newest_first(client: FlaskClient) -> None:
    ids = []
    for i in range(5):
        r = client.post(
            "/customers", json={"email": f"u{i}@example.com", "name": f"User {i}"}, headers=AUTH
        )
        ids.append(r.json["customer_id"])
    newest_first = list(reversed(ids))
    r = client.get("/customers?page_size=2&page_number=0", headers=AUTH)
    assert [c["customer_id"] for c in r.json["items"]] == newest_first[:2]
    r = client.get("/customers?page_size=2&page_number=1", headers=AUTH)
    assert [c["customer_id"] for c in r.json["items"]] == newest_first[2:4]
    r = client.get("/customers?page_size=2&page_number=2", headers=AUTH)
    assert [c["customer_id"] for c in r.json["items"]] == newest_first[4:]
    r = client.get("/customers?page_size=2&page_number=3", headers=AUTH)
    assert r.json == {"items": []}
    r = client.get("/customers", headers=AUTH)  # defaults: page 0, 10 per page
    assert [c["customer_id"] for c in r.json["items"]] == newest_first


def test_list_customers_filters(client: FlaskClient) -> None:
    for email, name in [("ada@example.com", "Ada Lovelace"), ("alan@example.com", "Alan Turing")]:
        client.post("/customers", json={"email": email, "name": name}, headers=AUTH)
    r = client.get("/customers?email=ALAN@example.com", headers=AUTH)
    assert [c["name"] for c in r.json["items"]] == ["Alan Turing"]
    r = client.get("/customers?name=lovel", headers=AUTH)
    assert [c["name"] for c in r.json["items"]] == ["Ada Lovelace"]
    r = client.get("/customers?name=%25", headers=AUTH)  # a literal %, not a wildcard
    assert r.json["items"] == []
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    r = client.get("/customers", query_string={"created_at_gte": past}, headers=AUTH)
    assert len(r.json["items"]) == 2
    r = client.get("/customers", query_string={"created_at_gte": future}, headers=AUTH)
    assert r.json["items"] == []
    r = client.get("/customers", query_string={"created_at_lte": past}, headers=AUTH)
    assert r.json["items"] == []


def test_patch_customer_changes_name_phone_and_metadata(client: FlaskClient, customer_id) -> None:
    r = client.patch(
        f"/customers/{customer_id}",
        json={"name": "Ada L.", "phone_number": "+441234", "metadata": {"tier": "gold"}},
        headers=AUTH,
    )
    assert r.status_code == 200
    assert (r.json["name"], r.json["phone_number"], r.json["metadata"]) == (
        "Ada L.",
        "+441234",
        {"tier": "gold"},
    )
    # Fields not sent stay as they are; null clears the optional ones.
    r = client.patch(
        f"/customers/{customer_id}", json={"phone_number": None, "metadata": None}, headers=AUTH
    )
    assert (r.json["name"], r.json["phone_number"], r.json["metadata"]) == ("Ada L.", None, {})
    assert client.get(f"/customers/{customer_id}", headers=AUTH).json["name"] == "Ada L."


def test_patch_customer_refuses_email_and_null_name(client: FlaskClient, customer_id) -> None:
    r = client.patch(f"/customers/{customer_id}", json={"email": "x@example.com"}, headers=AUTH)
    assert_error(r, 422, "VALIDATION_ERROR", field="email")
    r = client.patch(f"/customers/{customer_id}", json={"name": None}, headers=AUTH)
    assert_error(r, 422, "VALIDATION_ERROR", field="name")
    assert client.get(f"/customers/{customer_id}", headers=AUTH).json["email"] == "ada@example.com"


@pytest.mark.parametrize(
    "body, field",
    [
        ({"name": "A"}, "email"),
        ({"email": "ada@example.com"}, "name"),
        ({"email": "not-an-email", "name": "A"}, "email"),
        ({"email": 5, "name": "A"}, "email"),
        ({"email": "a@example.com", "name": ""}, "name"),
        ({"email": "a@example.com", "name": "A\u0000B"}, "name"),
        ({"email": "a@example.com", "name": "A", "metadata": {"k": [1]}}, "metadata.k"),
        ({"email": "a@example.com", "name": "A", "metadata": "x"}, "metadata"),
        ({"email": "a@example.com", "name": "A", "phone_number": 5}, "phone_number"),
    ],
)
def test_create_customer_rejects_bad_input(client: FlaskClient, body, field) -> None:
    assert_error(client.post("/customers", json=body, headers=AUTH), 422, "VALIDATION_ERROR", field)


# -- ledger entries -------------------------------------------------------------------------


def test_credit_returns_the_updated_wallet(client: FlaskClient, customer_id) -> None:
    r = post_entry(client, customer_id, amount=10000, reason="Welcome bonus")
    assert r.status_code == 200
    assert set(r.json) >= {"balance", "currency", "customer_id", "created_at", "updated_at"}
    assert (r.json["balance"], r.json["currency"], r.json["customer_id"]) == (
        10000,
        "USD",
        customer_id,
    )
    r = post_entry(client, customer_id, amount=2500, entry_type="debit", reason="usage")
    assert (r.status_code, r.json["balance"]) == (200, 7500)
    wallets = client.get(f"/customers/{customer_id}/wallets", headers=AUTH).json
    assert [(w["currency"], w["balance"]) for w in wallets["items"]] == [("USD", 7500), ("INR", 0)]
    assert wallets["total_balance_usd"] == 7500


def test_entries_made_through_the_api_are_merchant_adjustments(
    client: FlaskClient, customer_id
) -> None:
    post_entry(client, customer_id, amount=700, reason="Welcome", idempotency_key="w1")
    entry = client.get(entries_url(customer_id), headers=AUTH).json["items"][0]
    assert entry["event_type"] == "merchant_adjustment"
    assert set(entry) >= {
        "id",
        "amount",
        "after_balance",
        "before_balance",
        "business_id",
        "created_at",
        "currency",
        "customer_id",
        "event_type",
        "is_credit",
        "reason",
        "reference_object_id",
    }
    assert (entry["amount"], entry["before_balance"], entry["after_balance"]) == (700, 0, 700)
    assert (entry["is_credit"], entry["reason"], entry["currency"]) == (True, "Welcome", "USD")


def test_total_balance_usd_converts_inr(client: FlaskClient, customer_id) -> None:
    post_entry(client, customer_id, amount=1000)
    post_entry(client, customer_id, amount=1500000, currency="INR")
    r = client.get(f"/customers/{customer_id}/wallets", headers=AUTH)
    # 1,500,000 paise * 0.012 = 18,000 cents, plus 1,000 cents.
    assert r.json["total_balance_usd"] == 19000


def test_debit_beyond_balance_is_400_and_writes_nothing(client: FlaskClient, customer_id) -> None:
    post_entry(client, customer_id, amount=100)
    r = post_entry(client, customer_id, amount=101, entry_type="debit", idempotency_key="u1")
    body = assert_error(r, 400, "INSUFFICIENT_BALANCE")
    assert body["message"].startswith("Insufficient balance")
    assert (body["balance"], body["requested_amount"], body["currency"]) == (100, 101, "USD")
    assert len(client.get(entries_url(customer_id), headers=AUTH).json["items"]) == 1
    # The refused debit did not use up its key.
    post_entry(client, customer_id, amount=1)
    r = post_entry(client, customer_id, amount=101, entry_type="debit", idempotency_key="u1")
    assert (r.status_code, r.json["balance"]) == (200, 0)


def test_duplicate_idempotency_key_is_409_with_entry_wallet_and_no_retry(
    client: FlaskClient, customer_id
) -> None:
    first = post_entry(client, customer_id, amount=500, idempotency_key="welcome_1", reason="hi")
    post_entry(client, customer_id, amount=20)  # the wallet moves on after the original
    r = post_entry(client, customer_id, amount=500, idempotency_key="welcome_1", reason="hi")
    body = assert_error(r, 409, "DUPLICATE_IDEMPOTENCY_KEY")
    assert r.headers["x-should-retry"] == "false"
    assert body["entry"]["amount"] == 500
    assert body["entry"]["after_balance"] == first.json["balance"] == 500
    assert body["entry_id"] == body["entry"]["id"]
    assert body["wallet"]["balance"] == 520
    assert body["wallet"]["currency"] == "USD"
    assert len(client.get(entries_url(customer_id), headers=AUTH).json["items"]) == 2


@pytest.mark.parametrize("entry_type", ["credit", "debit"])
def test_same_key_raced_over_http_posts_once_and_answers_409_to_the_rest(
    client: FlaskClient, customer_id, entry_type: str
) -> None:
    # On PostgreSQL the losers hit the unique index with no savepoint; the view must retry
    # them in a new transaction and answer 409, never 500 or a second entry.
    post_entry(client, customer_id, amount=1_000)
    app = client.application
    barrier = threading.Barrier(THREADS)
    answers: list[tuple[int, dict]] = []
    lock = threading.Lock()

    def race() -> None:
        barrier.wait(timeout=30)
        r = app.test_client().post(
            entries_url(customer_id),
            json={
                "currency": "USD",
                "entry_type": entry_type,
                "amount": 300,
                "idempotency_key": "race",
            },
            headers=AUTH,
        )
        with lock:
            answers.append((r.status_code, r.json))

    threads = [threading.Thread(target=race) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    statuses = sorted(status for status, _ in answers)
    assert statuses == [200] + [409] * (THREADS - 1), answers
    expected = 1_300 if entry_type == "credit" else 700
    entry_ids = {body["entry"]["id"] for status, body in answers if status == 409}
    assert len(entry_ids) == 1
    assert all(body["wallet"]["balance"] == expected for s, body in answers if s == 409)
    wallets = client.get(f"/customers/{customer_id}/wallets", headers=AUTH).json["items"]
    assert wallets[0]["balance"] == expected
    assert len(client.get(entries_url(customer_id), headers=AUTH).json["items"]) == 2


@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_ledger_entry_is_one_statement_on_the_wire(
    client: FlaskClient, customer_id, settings: Settings, tx, tmp_path
) -> None:
    # The route's cost is what PostgreSQL receives, read from libpq's own protocol trace: one
    # statement (no BEGIN, no COMMIT: autocommit), no auth lookup (bootstrap key, or a stored
    # key already remembered), no reload of what the statement returned.
    from psycopg.pq import Trace

    with tx() as s:
        _, secret = apikeys.create_key(s, scopes=["read", "credit"])
    stored = {"Authorization": f"Bearer {secret}"}
    funded = post_entry(client, customer_id, amount=10_000_000)  # far above any threshold
    assert funded.status_code == 200
    assert client.get("/customers", headers=stored).status_code == 200  # remembers the key
    engines = (get_engine(settings), autocommit_engine(settings))
    trace = (tmp_path / "libpq.trace").open("w+")

    def on_checkout(dbapi_conn, *_args) -> None:  # type: ignore[no-untyped-def]
        dbapi_conn.pgconn.trace(trace.fileno())
        dbapi_conn.pgconn.set_trace_flags(Trace.SUPPRESS_TIMESTAMPS)

    def on_checkin(dbapi_conn, *_args) -> None:  # type: ignore[no-untyped-def]
        dbapi_conn.pgconn.untrace()

    listeners = [("checkout", on_checkout), ("checkin", on_checkin)]
    for engine in engines:
        for name, fn in listeners:
            event.listen(engine, name, fn)
    try:
        for n, headers in enumerate((AUTH, stored)):
            trace.seek(0)
            trace.truncate()
            r = client.post(
                entries_url(customer_id),
                json={
                    "currency": "USD",
                    "entry_type": "credit",
                    "amount": 1,
                    "idempotency_key": f"counted-{n}",
                },
                headers=headers,
            )
            assert r.status_code == 200
            trace.seek(0)
            sent = [line.split("\t")[2] for line in trace if line.startswith("F\t")]
            # Extended protocol: Execute runs a statement; a simple Query would be BEGIN or
            # COMMIT. (A Parse of its own is psycopg preparing the statement, once.)
            assert sent.count("Execute") == 1 and "Query" not in sent, sent
    finally:
        for engine in engines:
            for name, fn in listeners:
                event.remove(engine, name, fn)
        trace.close()


def test_reused_key_with_other_parameters_is_422_naming_them(
    client: FlaskClient, customer_id
) -> None:
    post_entry(client, customer_id, amount=500, idempotency_key="k", reason="a")
    r = post_entry(client, customer_id, amount=600, idempotency_key="k", reason="b")
    body = assert_error(r, 422, "IDEMPOTENCY_KEY_REUSED")
    assert body["differing_fields"] == ["amount", "reason"]
    assert "amount" in body["message"] and "reason" in body["message"]
    r = post_entry(client, customer_id, amount=500, idempotency_key="k", reason="a", currency="INR")
    assert assert_error(r, 422, "IDEMPOTENCY_KEY_REUSED")["differing_fields"] == ["currency"]
    r = post_entry(
        client, customer_id, amount=500, idempotency_key="k", reason="a", entry_type="debit"
    )
    assert assert_error(r, 422, "IDEMPOTENCY_KEY_REUSED")["differing_fields"] == ["entry_type"]


@pytest.mark.parametrize(
    "change, field, code",
    [
        ({"amount": MISSING}, "amount", "VALIDATION_ERROR"),
        ({"amount": None}, "amount", "VALIDATION_ERROR"),
        ({"amount": 1.5}, "amount", "VALIDATION_ERROR"),
        ({"amount": 100.0}, "amount", "VALIDATION_ERROR"),
        ({"amount": True}, "amount", "VALIDATION_ERROR"),
        ({"amount": "100"}, "amount", "VALIDATION_ERROR"),
        ({"amount": 0}, "amount", "VALIDATION_ERROR"),
        ({"amount": -5}, "amount", "VALIDATION_ERROR"),
        ({"amount": 2**53}, "amount", "VALIDATION_ERROR"),
        ({"amount": 10**30}, "amount", "VALIDATION_ERROR"),
        ({"currency": "EUR"}, "currency", "UNSUPPORTED_CURRENCY"),
        ({"currency": "DOLLARS"}, "currency", "VALIDATION_ERROR"),
        ({"currency": 840}, "currency", "VALIDATION_ERROR"),
        ({"currency": None}, "currency", "VALIDATION_ERROR"),
        ({"currency": MISSING}, "currency", "VALIDATION_ERROR"),
        ({"entry_type": MISSING}, "entry_type", "VALIDATION_ERROR"),
        ({"entry_type": "refund"}, "entry_type", "VALIDATION_ERROR"),
        ({"entry_type": None}, "entry_type", "VALIDATION_ERROR"),
        ({"idempotency_key": ""}, "idempotency_key", "VALIDATION_ERROR"),
        ({"idempotency_key": 7}, "idempotency_key", "VALIDATION_ERROR"),
        ({"idempotency_key": "x" * 256}, "idempotency_key", "VALIDATION_ERROR"),
        ({"reason": 7}, "reason", "VALIDATION_ERROR"),
        ({"reason": "a\u0000b"}, "reason", "VALIDATION_ERROR"),
    ],
)
def test_bad_ledger_entry_is_422_naming_the_field(
    client: FlaskClient, customer_id, change, field, code
) -> None:
    body = {"amount": 100, "currency": "USD", "entry_type": "credit", **change}
    body = {k: v for k, v in body.items() if v is not MISSING}
    r = client.post(entries_url(customer_id), json=body, headers=AUTH)
    assert_error(r, 422, code, field)
    assert client.get(entries_url(customer_id), headers=AUTH).json["items"] == []


def test_currency_must_be_upper_case_as_in_dodo(client: FlaskClient, customer_id) -> None:
    assert_error(post_entry(client, customer_id, amount=5, currency="usd"), 422, "VALIDATION_ERROR")


def test_balance_cannot_exceed_the_json_safe_maximum(client: FlaskClient, customer_id) -> None:
    assert post_entry(client, customer_id, amount=2**53 - 1).status_code == 200
    assert_error(post_entry(client, customer_id, amount=1), 422, "INVALID_AMOUNT", "amount")


# -- listing entries -------------------------------------------------------------------------


def test_entries_are_listed_newest_first_with_zero_based_pages(
    client: FlaskClient, customer_id
) -> None:
    for amount in range(1, 13):
        post_entry(client, customer_id, amount=amount)
    url = entries_url(customer_id)
    page0 = client.get(url, headers=AUTH).json["items"]  # default page 0, size 10
    assert [e["amount"] for e in page0] == list(range(12, 2, -1))
    page1 = client.get(url + "?page_number=1", headers=AUTH).json["items"]
    assert [e["amount"] for e in page1] == [2, 1]
    r = client.get(url + "?page_number=1&page_size=5", headers=AUTH)
    assert [e["amount"] for e in r.json["items"]] == [7, 6, 5, 4, 3]
    r = client.get(url + "?page_size=100", headers=AUTH)
    assert len(r.json["items"]) == 12
    assert client.get(url + "?page_number=9", headers=AUTH).json == {"items": []}


def test_entries_filter_by_currency(client: FlaskClient, customer_id) -> None:
    post_entry(client, customer_id, amount=1)
    post_entry(client, customer_id, amount=2, currency="INR")
    post_entry(client, customer_id, amount=3)
    url = entries_url(customer_id)
    r = client.get(url + "?currency=USD", headers=AUTH)
    assert [e["amount"] for e in r.json["items"]] == [3, 1]
    r = client.get(url + "?currency=INR", headers=AUTH)
    assert [(e["amount"], e["currency"]) for e in r.json["items"]] == [(2, "INR")]


@pytest.mark.parametrize(
    "query, field, code",
    [
        ("page_size=101", "page_size", "VALIDATION_ERROR"),
        ("page_size=0", "page_size", "VALIDATION_ERROR"),
        ("page_size=ten", "page_size", "VALIDATION_ERROR"),
        ("page_number=-1", "page_number", "VALIDATION_ERROR"),
        ("page_number=1.5", "page_number", "VALIDATION_ERROR"),
        ("page_number=99999999999999999999", "page_number", "VALIDATION_ERROR"),
        ("currency=EUR", "currency", "UNSUPPORTED_CURRENCY"),
        ("currency=US", "currency", "VALIDATION_ERROR"),
    ],
)
def test_bad_entry_list_query_is_422_naming_the_field(
    client: FlaskClient, customer_id, query, field, code
) -> None:
    r = client.get(f"{entries_url(customer_id)}?{query}", headers=AUTH)
    assert_error(r, 422, code, field)


@pytest.mark.parametrize(
    "query, field",
    [
        ("page_size=101", "page_size"),
        ("page_number=-1", "page_number"),
        ("created_at_gte=yesterday", "created_at_gte"),
        ("email=a%00b", "email"),
    ],
)
def test_bad_customer_list_query_is_422_naming_the_field(client: FlaskClient, query, field):
    assert_error(client.get(f"/customers?{query}", headers=AUTH), 422, "VALIDATION_ERROR", field)


# -- transport-level errors -----------------------------------------------------------------


def test_malformed_json_is_400(client: FlaskClient, customer_id) -> None:
    for raw in (b'{"amount": 1,', b"{'amount': 1}", b"[" * 100_000):
        r = client.post(
            entries_url(customer_id),
            data=raw,
            headers={**AUTH, "Content-Type": "application/json"},
        )
        assert_error(r, 400, "MALFORMED_JSON", "body")


@pytest.mark.parametrize("raw", [b"[1, 2]", b'"text"', b"null", b"42"])
def test_json_that_is_not_an_object_is_422(client: FlaskClient, customer_id, raw) -> None:
    r = client.post(
        entries_url(customer_id), data=raw, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert_error(r, 422, "VALIDATION_ERROR", "body")


def test_empty_body_is_422(client: FlaskClient, customer_id) -> None:
    r = client.post(entries_url(customer_id), headers=AUTH)
    assert_error(r, 422, "VALIDATION_ERROR", "body")


def test_wrong_content_type_is_422(client: FlaskClient, customer_id) -> None:
    r = client.post(
        entries_url(customer_id),
        data="amount=5&currency=USD&entry_type=credit",
        headers={**AUTH, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_error(r, 422, "UNSUPPORTED_CONTENT_TYPE", "content-type")


def test_body_over_one_mebibyte_is_413(client: FlaskClient, customer_id) -> None:
    padding = "x" * (1024 * 1024)
    for method, url in (("post", entries_url(customer_id)), ("patch", f"/customers/{customer_id}")):
        r = getattr(client, method)(
            url,
            data=f'{{"reason": "{padding}"}}',
            headers={**AUTH, "Content-Type": "application/json"},
        )
        assert_error(r, 413, "REQUEST_ENTITY_TOO_LARGE")


def test_unknown_route_is_404_json(client: FlaskClient) -> None:
    for url in ("/nope", "/customers/x/wallets/nope", "/customers/"):
        assert_error(client.get(url, headers=AUTH), 404, "NOT_FOUND")


def test_wrong_method_is_405_json_with_allow(client: FlaskClient, customer_id) -> None:
    r = client.delete(f"/customers/{customer_id}", headers=AUTH)
    assert_error(r, 405, "METHOD_NOT_ALLOWED")
    assert "PATCH" in r.headers["Allow"] and "GET" in r.headers["Allow"]
    assert_error(client.put("/customers", headers=AUTH), 405, "METHOD_NOT_ALLOWED")


def test_nul_in_path_is_422(client: FlaskClient) -> None:
    assert_error(
        client.get("/customers/a%00b", headers=AUTH), 422, "VALIDATION_ERROR", "customer_id"
    )


# -- authentication -------------------------------------------------------------------------

PROTECTED = [
    ("post", "/customers"),
    ("get", "/customers"),
    ("get", "/customers/{id}"),
    ("patch", "/customers/{id}"),
    ("get", "/customers/{id}/wallets"),
    ("post", "/customers/{id}/wallets/ledger-entries"),
    ("get", "/customers/{id}/wallets/ledger-entries"),
]


@pytest.fixture
def revoked_key(settings: Settings, tx) -> str:
    """The secret of a stored API key that has been revoked."""
    with tx() as s:
        key, secret = apikeys.create_key(s, name="old")
    with tx() as s:
        apikeys.revoke_key(s, key.id)
    return secret


def _call(client: FlaskClient, method: str, url: str, headers: dict):
    kwargs = {"headers": headers}
    if method in ("post", "patch"):
        kwargs["json"] = {"email": "z@example.com", "name": "Z"} if url == "/customers" else {}
    return getattr(client, method)(url, **kwargs)


def test_every_protected_route_answers_401_identically(
    client: FlaskClient, customer_id, revoked_key
) -> None:
    # Far more failures than AUTH_FAILURE_LIMIT from one address; throttling has its own tests.
    client.application.extensions["billing_auth_throttle"].item = RateLimitItemPerMinute(10**6)
    attempts = {
        "missing": {},
        "empty bearer": {"Authorization": "Bearer "},
        "basic scheme": {"Authorization": "Basic dGVzdC1rZXk6"},
        "no scheme": {"Authorization": "test-key"},
        "wrong key": {"Authorization": "Bearer test-kez"},
        "wrong stored-looking key": {"Authorization": "Bearer bwk_" + "A" * 43},
        "revoked key": {"Authorization": f"Bearer {revoked_key}"},
    }
    bodies = set()
    for method, template in PROTECTED:
        url = template.format(id=customer_id)
        for what, headers in attempts.items():
            r = _call(client, method, url, headers)
            assert r.status_code == 401, (method, url, what)
            assert r.mimetype == "application/json"
            assert r.headers["WWW-Authenticate"] == "Bearer"
            bodies.add(r.get_data())
    assert len(bodies) == 1
    assert client.get(f"/customers/{customer_id}", headers=AUTH).json["name"] == "Ada"
    assert len(client.get("/customers", headers=AUTH).json["items"]) == 1  # nothing created


def test_stored_key_works_until_revoked(client: FlaskClient, customer_id, tx) -> None:
    with tx() as s:
        key, secret = apikeys.create_key(s, name="backend")
    headers = {"Authorization": f"Bearer {secret}"}
    for method, template in PROTECTED:
        r = _call(client, method, template.format(id=customer_id), headers)
        assert r.status_code != 401, (method, template)
    with tx() as s:
        apikeys.revoke_key(s, key.id)
    assert client.get("/customers", headers=headers).status_code == 401


def test_key_revoked_by_another_process_is_refused_within_the_cache_bound(
    client: FlaskClient, tx, monkeypatch: pytest.MonkeyPatch
) -> None:
    with tx() as s:
        key, secret = apikeys.create_key(s, name="backend")
    headers = {"Authorization": f"Bearer {secret}"}
    assert client.get("/customers", headers=headers).status_code == 200
    with tx() as s:  # what `billing-worker apikeys revoke` does, in its own process
        s.execute(update(ApiKey).where(ApiKey.id == key.id).values(revoked_at=utcnow()))
    # Remembered for at most PRINCIPAL_CACHE_SECONDS; once that has passed, refused.
    assert client.get("/customers", headers=headers).status_code == 200
    monkeypatch.setattr(apikeys, "PRINCIPAL_CACHE_SECONDS", 0.0)
    assert client.get("/customers", headers=headers).status_code == 401


def test_without_bootstrap_key_only_stored_keys_work(database_url: str, tx) -> None:
    client = create_app(Settings(database_url=database_url)).test_client()
    assert client.get("/customers", headers={"Authorization": "Bearer "}).status_code == 401
    assert client.get("/customers", headers=AUTH).status_code == 401
    with tx() as s:
        _, secret = apikeys.create_key(s)
    assert (
        client.get("/customers", headers={"Authorization": f"Bearer {secret}"}).status_code == 200
    )


def test_public_routes_need_no_key(client: FlaskClient) -> None:
    r = client.get("/healthz")
    assert (r.status_code, r.json["database"]) == (200, "ok")
    assert client.get("/openapi.json").status_code == 200
    r = client.get("/docs", follow_redirects=True)
    assert r.status_code == 200 and r.mimetype == "text/html"
    assert b"swagger-ui" in r.data


def test_healthz_names_a_down_database(tmp_path) -> None:
    missing = tmp_path / "no-such-dir" / "billing.db"
    client = create_app(Settings(database_url=f"sqlite:///{missing}")).test_client()
    r = client.get("/healthz")
    assert r.status_code == 503
    assert r.json["database"].startswith("down")


# -- the OpenAPI document -------------------------------------------------------------------


def test_openapi_documents_every_route_status_and_the_bearer_scheme(client: FlaskClient) -> None:
    doc = client.get("/openapi.json").json
    assert doc["openapi"].startswith("3.1")
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
    }
    paths = doc["paths"]
    expected = {
        ("/customers", "post"): {"200", "400", "401", "404", "413", "422"},
        ("/customers", "get"): {"200", "400", "401", "422"},
        ("/customers/{customer_id}", "get"): {"200", "401", "404", "422"},
        ("/customers/{customer_id}", "patch"): {"200", "400", "401", "404", "413", "422"},
        ("/customers/{customer_id}/wallets", "get"): {"200", "401", "404", "422"},
        ("/customers/{customer_id}/wallets/ledger-entries", "post"): {
            "200",
            "400",
            "401",
            "404",
            "409",
            "413",
            "422",
        },
        ("/customers/{customer_id}/wallets/ledger-entries", "get"): {"200", "401", "404", "422"},
    }
    for (path, method), statuses in expected.items():
        operation = paths[path][method]
        assert statuses <= set(operation["responses"]), (path, method)
        assert operation["security"] == [{"bearerAuth": []}]
    assert "security" not in paths["/healthz"]["get"]
    conflict = paths["/customers/{customer_id}/wallets/ledger-entries"]["post"]["responses"]["409"]
    assert "x-should-retry" in conflict["headers"]
    schemas = doc["components"]["schemas"]
    assert set(schemas["LedgerEntryCreate"]["properties"]) == {
        "amount",
        "currency",
        "entry_type",
        "idempotency_key",
        "reason",
        "expires_at",
        "category",
    }
    assert set(schemas["LedgerEntryCreate"]["required"]) == {"amount", "currency", "entry_type"}
    assert schemas["LedgerEntryCreate"]["properties"]["amount"]["type"] == "integer"
    assert set(schemas["WalletListOut"]["properties"]) == {"items", "total_balance_usd"}
    assert {"balance", "currency", "customer_id", "created_at", "updated_at"} <= set(
        schemas["WalletOut"]["properties"]
    )
    for name in ("BadRequestOut", "UnauthorizedOut", "DuplicateOut", "ValidationOut"):
        assert {"code", "message"} <= set(schemas[name]["required"])
    list_params = {
        p["name"]
        for p in paths["/customers/{customer_id}/wallets/ledger-entries"]["get"]["parameters"]
    }
    assert list_params == {"customer_id", "currency", "page_number", "page_size"}


def test_api_uses_the_ledger_for_every_change(client: FlaskClient, customer_id, tx) -> None:
    post_entry(client, customer_id, amount=300)
    post_entry(client, customer_id, amount=100, entry_type="debit")
    post_entry(client, customer_id, amount=1000, entry_type="debit")  # refused
    with tx() as s:
        report = ledger.verify(s)
    assert report.ok, report.problems
    assert report.entries == 2
