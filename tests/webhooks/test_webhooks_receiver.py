"""The receivers: signature verification, malformed input (never 5xx), storing once."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select

from tests.support.webhooks import (
    DODO_SECRET,
    OTHER_SECRET,
    STRIPE_SECRET,
    dodo_headers,
    dodo_payment,
    dumps,
    stripe_event,
    stripe_headers,
)
from webhooks import create_app
from worker.infra.celery_app import app as celery_app
from worker.models import InboxEvent


@pytest.fixture(params=["postgresql", "pgbouncer"])
def backend(request: pytest.FixtureRequest) -> str:
    """PostgreSQL, directly and through PgBouncer (the receiver's autocommit insert): the
    receiver's SQLite path is covered by test_serve_embedded and the inbox core tests."""
    return request.param


@pytest.fixture(autouse=True)
def _memory_broker():
    """Enqueues from the in-process app go to kombu's in-memory transport (no files, no
    server); these tests look at the inbox, the worker is exercised end to end elsewhere."""
    previous = celery_app.conf.broker_url
    _use_broker("memory://")
    yield
    _use_broker(previous)


def _use_broker(url: str) -> None:
    if celery_app._pool is not None:
        celery_app._pool.force_close_all()
    celery_app._pool = None
    celery_app.amqp._producer_pool = None
    celery_app.conf.broker_url = url


@pytest.fixture
def client(settings):
    """A test client with both providers enabled."""
    app = create_app(
        settings.with_overrides(
            dodo_webhook_secret=DODO_SECRET, stripe_webhook_secret=STRIPE_SECRET
        )
    )
    return app.test_client()


def _inbox_count(tx) -> int:
    with tx() as s:
        return s.scalar(select(func.count()).select_from(InboxEvent))


def test_signed_dodo_payment_is_stored_pending(client, tx) -> None:
    body = dumps(dodo_payment())
    response = client.post("/webhooks/dodo", data=body, headers=dodo_headers(body))
    assert response.status_code == 200
    assert response.json["duplicate"] is False
    with tx() as s:
        event = s.get(InboxEvent, response.json["event_id"])
        assert (event.provider, event.event_type, event.status) == (
            "dodo",
            "payment.succeeded",
            "pending",
        )


def test_redelivered_dodo_webhook_is_stored_once(client, tx) -> None:
    body = dumps(dodo_payment())
    headers = dodo_headers(body)
    first = client.post("/webhooks/dodo", data=body, headers=headers)
    second = client.post("/webhooks/dodo", data=body, headers=headers)
    assert (first.status_code, second.status_code) == (200, 200)
    assert second.json == {"event_id": None, "duplicate": True, "status": "accepted"}
    assert _inbox_count(tx) == 1


def test_wrong_secret_is_401(client, tx) -> None:
    body = dumps(dodo_payment())
    headers = dodo_headers(body, secret=OTHER_SECRET)
    response = client.post("/webhooks/dodo", data=body, headers=headers)
    assert response.status_code == 401
    assert response.json["code"] == "INVALID_SIGNATURE"
    assert _inbox_count(tx) == 0


def test_rotated_signatures_any_valid_one_is_accepted(client) -> None:
    body = dumps(dodo_payment())
    good = dodo_headers(body)
    old = dodo_headers(body, secret=OTHER_SECRET, msg_id=good["webhook-id"])
    # Provider-side rotation: old and new signatures, space separated, in either order.
    good["webhook-signature"] = f"{old['webhook-signature']} {good['webhook-signature']}"
    assert client.post("/webhooks/dodo", data=body, headers=good).status_code == 200


def test_our_secret_rotation_accepts_either_configured_secret(settings) -> None:
    app = create_app(settings.with_overrides(dodo_webhook_secret=f"{OTHER_SECRET} {DODO_SECRET}"))
    body = dumps(dodo_payment())
    response = app.test_client().post("/webhooks/dodo", data=body, headers=dodo_headers(body))
    assert response.status_code == 200


@pytest.mark.parametrize("offset", [-301 - 60, 360, -(10**6)])
def test_stale_or_future_timestamp_is_401(client, offset) -> None:
    body = dumps(dodo_payment())
    headers = dodo_headers(body, timestamp=time.time() + offset)
    assert client.post("/webhooks/dodo", data=body, headers=headers).status_code == 401


def test_tampered_body_is_401(client) -> None:
    body = dumps(dodo_payment())
    headers = dodo_headers(body)
    tampered = body.replace('"2000"', '"9000"')
    assert client.post("/webhooks/dodo", data=tampered, headers=headers).status_code == 401


MALFORMED_HEADERS = {
    "missing signature": {"webhook-signature": None},
    "missing id": {"webhook-id": None},
    "missing timestamp": {"webhook-timestamp": None},
    "garbage signature": {"webhook-signature": "garbage"},
    "no comma": {"webhook-signature": "v1"},
    "too many commas": {"webhook-signature": "v1,a,b"},
    "bad base64": {"webhook-signature": "v1,@@@not-base64@@@"},
    "short base64": {"webhook-signature": "v1,abc"},
    "unknown version only": {"webhook-signature": "v2,AAAA"},
    "nan timestamp": {"webhook-timestamp": "NaN"},
    "inf timestamp": {"webhook-timestamp": "inf"},
    "huge timestamp": {"webhook-timestamp": "9" * 400},
    "huge float timestamp": {"webhook-timestamp": "1e308"},
    "negative timestamp": {"webhook-timestamp": "-1700000000"},
    "text timestamp": {"webhook-timestamp": "yesterday"},
    "empty everything": {"webhook-id": "", "webhook-timestamp": "", "webhook-signature": ""},
}


@pytest.mark.parametrize("change", MALFORMED_HEADERS.values(), ids=MALFORMED_HEADERS.keys())
def test_malformed_dodo_headers_are_4xx(client, change, tx) -> None:
    body = dumps(dodo_payment())
    headers = {k: v for k, v in {**dodo_headers(body), **change}.items() if v is not None}
    response = client.post("/webhooks/dodo", data=body, headers=headers)
    assert 400 <= response.status_code < 500
    assert response.json["code"]
    assert _inbox_count(tx) == 0


MALFORMED_BODIES = {
    "non-utf8": b"\xff\xfe{\x00}",
    "not json": b"hello",
    "json array": b"[1, 2]",
    "NaN constant": b'{"type": "payment.succeeded", "x": NaN}',
    "no type": b'{"data": {}}',
    "type not a string": b'{"type": 5}',
    "type with NUL": b'{"type": "payment\\u0000succeeded"}',
    "lone surrogate": b'{"type": "payment.succeeded", "data": "\\ud800"}',
    "deep nesting": b"[" * 100_000 + b"]" * 100_000,
}


@pytest.mark.parametrize("body", MALFORMED_BODIES.values(), ids=MALFORMED_BODIES.keys())
def test_malformed_signed_dodo_bodies_are_4xx(client, body) -> None:
    # Signed over the exact bytes when they are text; non-UTF-8 is refused before verifying.
    try:
        headers = dodo_headers(body)
    except UnicodeDecodeError:
        headers = dodo_headers(b"{}")
    response = client.post("/webhooks/dodo", data=body, headers=headers)
    assert 400 <= response.status_code < 500, response.json


def test_malformed_webhook_id_is_400(client) -> None:
    body = dumps(dodo_payment())
    headers = dodo_headers(body, msg_id="x" * 300)
    assert client.post("/webhooks/dodo", data=body, headers=headers).status_code == 400


def test_ten_megabyte_body_is_413(client) -> None:
    body = b"x" * (10 * 1024 * 1024)
    headers = dodo_headers(b"{}")
    response = client.post("/webhooks/dodo", data=body, headers=headers)
    assert response.status_code == 413


def test_unconfigured_provider_is_404(settings) -> None:
    app = create_app(settings.with_overrides(dodo_webhook_secret=None, stripe_webhook_secret=None))
    body = dumps(dodo_payment())
    client = app.test_client()
    assert client.post("/webhooks/dodo", data=body, headers=dodo_headers(body)).status_code == 404
    assert client.post("/webhooks/stripe", data=body).status_code == 404


def test_webhook_routes_need_no_api_key(client) -> None:
    body = dumps(dodo_payment())
    response = client.post("/webhooks/dodo", data=body, headers=dodo_headers(body))
    assert response.status_code == 200  # no Authorization header at all


def _intent(**metadata: str) -> dict:
    return {
        "id": "pi_test_1",
        "object": "payment_intent",
        "amount": 1500,
        "amount_received": 1500,
        "currency": "usd",
        "status": "succeeded",
        "metadata": metadata,
    }


def test_signed_stripe_event_is_stored_by_evt_id(client, tx) -> None:
    event = stripe_event("payment_intent.succeeded", _intent(wallet_credit="1500"))
    body = dumps(event)
    first = client.post("/webhooks/stripe", data=body, headers=stripe_headers(body))
    again = client.post("/webhooks/stripe", data=body, headers=stripe_headers(body))
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json["duplicate"] is True
    with tx() as s:
        stored = s.get(InboxEvent, first.json["event_id"])
        assert (stored.provider, stored.provider_event_id) == ("stripe", event["id"])


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "garbage",
        "t=abc,v1=00",
        "t=1,v1=00",
        "v1=deadbeef",
        "t=" + "9" * 400 + ",v1=00",
        "t=,v1=",
        ",,,",
    ],
)
def test_malformed_or_wrong_stripe_signature_is_401(client, header) -> None:
    body = dumps(stripe_event("payment_intent.succeeded", _intent()))
    headers = {"content-type": "application/json"}
    if header is not None:
        headers["Stripe-Signature"] = header
    response = client.post("/webhooks/stripe", data=body, headers=headers)
    assert response.status_code == 401


def test_stripe_wrong_secret_and_stale_timestamp_are_401(client) -> None:
    body = dumps(stripe_event("payment_intent.succeeded", _intent()))
    wrong = stripe_headers(body, secret="whsec_other")
    stale = stripe_headers(body, timestamp=int(time.time()) - 301)
    assert client.post("/webhooks/stripe", data=body, headers=wrong).status_code == 401
    assert client.post("/webhooks/stripe", data=body, headers=stale).status_code == 401


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"type": "x"}', b'{"id": 5, "type": "x"}'])
def test_signed_but_malformed_stripe_body_is_400(client, body) -> None:
    headers = stripe_headers(body.decode())
    assert client.post("/webhooks/stripe", data=body, headers=headers).status_code == 400


def test_openapi_documents_webhook_routes(client) -> None:
    paths = client.get("/openapi.json").json["paths"]
    assert {"401", "404", "413", "503"} <= set(paths["/webhooks/dodo"]["post"]["responses"])
    assert "/webhooks/stripe" in paths
