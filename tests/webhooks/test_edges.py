"""Input edges of the HTTP app (issue 13, item 9): non-finite numbers, metadata bounds, JSON for
redirects and over-long request lines, bounded metric labels and the metrics token, and a
health check that keeps its broker connection."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from flask.testing import FlaskClient

from webhooks import create_app
from webhooks.json_answers import MAX_REQUEST_LINE, request_line_length
from worker.config import Settings

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


def entries_url(customer_id: str) -> str:
    return f"/customers/{customer_id}/wallets/ledger-entries"


def assert_error(response, status: int, code: str, field: str | None = None) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.json
    assert body["code"] == code
    if field is not None:
        assert body["field"] == field, body
    return body


# -- non-finite numbers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"amount": 1e400, "currency": "USD", "entry_type": "credit"}', "amount"),
        (b'{"amount": -1e400, "currency": "USD", "entry_type": "credit"}', "amount"),
        (b'{"amount": NaN, "currency": "USD", "entry_type": "credit"}', "amount"),
        (b'{"amount": 1, "currency": "USD", "entry_type": "credit", "x": [Infinity]}', "x.0"),
    ],
)
def test_non_finite_number_is_422_naming_the_field(
    client: FlaskClient, customer_id, raw, field
) -> None:
    r = client.post(
        entries_url(customer_id), data=raw, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert_error(r, 422, "VALIDATION_ERROR", field)
    assert (
        client.get(f"/customers/{customer_id}/wallets", headers=AUTH).json["items"][0]["balance"]
        == 0
    )


def test_non_finite_metadata_value_is_422_and_not_stored(client: FlaskClient) -> None:
    raw = b'{"email": "inf@example.com", "name": "Inf", "metadata": {"score": 1e999}}'
    r = client.post("/customers", data=raw, headers={**AUTH, "Content-Type": "application/json"})
    assert_error(r, 422, "VALIDATION_ERROR", "metadata.score")
    assert client.get("/customers?email=inf@example.com", headers=AUTH).json["items"] == []


# -- metadata bounds (Dodo's: 50 keys, keys up to 40 characters, values up to 500) ----------

METADATA_AT_LIMITS = {f"k{i:02d}" + "x" * 37: "v" * 500 for i in range(50)}


@pytest.mark.parametrize(
    "metadata",
    [
        {f"k{i}": "v" for i in range(51)},
        {"k" * 41: "v"},
        {"plan": "v" * 501},
    ],
    ids=["51 keys", "key of 41", "value of 501"],
)
def test_metadata_over_dodos_limits_is_422_naming_metadata(client: FlaskClient, metadata) -> None:
    body = {"email": "meta@example.com", "name": "Meta", "metadata": metadata}
    assert_error(
        client.post("/customers", json=body, headers=AUTH), 422, "VALIDATION_ERROR", "metadata"
    )
    assert client.get("/customers?email=meta@example.com", headers=AUTH).json["items"] == []


def test_metadata_at_dodos_limits_is_stored(client: FlaskClient) -> None:
    body = {"email": "meta@example.com", "name": "Meta", "metadata": METADATA_AT_LIMITS}
    created = client.post("/customers", json=body, headers=AUTH)
    assert created.status_code == 200, created.json
    assert created.json["metadata"] == METADATA_AT_LIMITS


def test_patching_metadata_over_the_limits_is_422_and_changes_nothing(
    client: FlaskClient, customer_id
) -> None:
    r = client.patch(f"/customers/{customer_id}", json={"metadata": {"k" * 41: 1}}, headers=AUTH)
    assert_error(r, 422, "VALIDATION_ERROR", "metadata")
    assert client.get(f"/customers/{customer_id}", headers=AUTH).json["metadata"] == {}


# -- every answer is JSON -------------------------------------------------------------------


def test_a_routing_redirect_is_json(client: FlaskClient) -> None:
    r = client.get("/customers//cus_x/wallets", headers=AUTH)
    assert r.status_code == 308
    assert r.headers["Location"].endswith("/customers/cus_x/wallets")
    assert r.mimetype == "application/json"
    assert r.json["code"] == "REDIRECT" and r.json["location"] == r.headers["Location"]


def test_the_docs_redirect_is_json(client: FlaskClient) -> None:
    r = client.get("/docs")
    assert (r.status_code, r.mimetype, r.json["location"]) == (
        302,
        "application/json",
        "/docs/swagger",
    )


def test_a_request_line_over_the_limit_is_a_json_414_before_authentication(
    client: FlaskClient,
) -> None:
    target = "/customers?email=" + "a" * MAX_REQUEST_LINE
    r = client.get(target)  # no key: the 414 comes first
    body = assert_error(r, 414, "REQUEST_URI_TOO_LONG")
    assert str(MAX_REQUEST_LINE) in body["message"]


def test_a_request_line_at_the_limit_is_served(client: FlaskClient) -> None:
    # "GET " + target + " HTTP/1.1" is exactly the limit.
    target = "/healthz?pad="
    target += "a" * (MAX_REQUEST_LINE - len("GET  HTTP/1.1") - len(target))
    environ = {"REQUEST_METHOD": "GET", "RAW_URI": target, "SERVER_PROTOCOL": "HTTP/1.1"}
    assert request_line_length(environ) == MAX_REQUEST_LINE
    assert client.get(target).status_code == 200


# -- /metrics -------------------------------------------------------------------------------


def test_metrics_labels_never_carry_a_raw_path_or_method(client: FlaskClient) -> None:
    client.open("/customers/cus_secret_path_123", method="BREW", headers=AUTH)
    client.get("/no/such/route/xyz987")
    text = client.get("/metrics").get_data(as_text=True)
    assert "cus_secret_path_123" not in text and "xyz987" not in text and "BREW" not in text
    assert 'method="OTHER"' in text and 'route="unmatched"' in text


def test_metrics_token_is_required_when_set(settings: Settings) -> None:
    client = create_app(settings.with_overrides(metrics_token="m-token-1")).test_client()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "m-token-1"}):
        body = assert_error(client.get("/metrics", headers=headers), 401, "UNAUTHORIZED")
        assert "metrics token" in body["message"]
    r = client.get("/metrics", headers={"Authorization": "Bearer m-token-1"})
    assert r.status_code == 200 and b"billing_http_requests" in r.data


def test_metrics_is_open_without_a_token(client: FlaskClient) -> None:
    assert client.get("/metrics").status_code == 200


# -- /healthz -------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite"])
def test_healthz_reuses_one_broker_connection(settings: Settings, redis_url: str) -> None:
    client = create_app(settings.with_overrides(broker_url=redis_url)).test_client()
    watcher = redis.Redis.from_url(redis_url)
    watcher.ping()  # the watcher's own connection is counted before the first reading

    def connections() -> int:
        return watcher.info("stats")["total_connections_received"]

    assert client.get("/healthz").json["broker"] == "ok"
    before = connections()
    for _ in range(10):
        assert client.get("/healthz").json["broker"] == "ok"
    assert connections() == before
    watcher.close()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_healthz_reports_a_dead_broker_and_reconnects(settings: Settings, tmp_path) -> None:
    from tests.support.processes import redis_server

    with redis_server(tmp_path) as (url, _):
        client = create_app(settings.with_overrides(broker_url=url)).test_client()
        assert client.get("/healthz").json["broker"] == "ok"
    r = client.get("/healthz")  # the server is gone: the kept connection fails, and is dropped
    assert r.status_code == 503 and r.json["broker"].startswith("down")
    assert r.json["database"] == "ok"
