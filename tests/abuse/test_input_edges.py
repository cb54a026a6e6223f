"""Input edges, tried as an attacker would against the real server (issue 13, items 9 and 10):
gunicorn as the Procfile runs it, PostgreSQL, a private Redis and a Celery worker."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from sqlalchemy import func, select

from tests.support.processes import (
    PG_ADMIN_DSN,
    celery_worker,
    gunicorn,
    redis_server,
    stop,
    wait_until,
)
from tests.support.webhooks import dodo_headers, dodo_payment, migrated_pg_database, stack_env
from worker.config import Settings
from worker.infra.db import transaction
from worker.models import Customer, InboxEvent, LedgerEntry

pytestmark = pytest.mark.slow

API_KEY = "abuse-edges-bootstrap-key-0123456789abcdef"
METRICS_TOKEN = "abuse-edges-metrics-token-0123456789"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@dataclass
class Stack:
    base: str
    settings: Settings

    def url(self, path: str) -> str:
        return self.base + path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """PostgreSQL + private redis-server + gunicorn + a Celery worker, shared by this module."""
    tmp = tmp_path_factory.mktemp("abuse-edges")
    with migrated_pg_database() as settings, redis_server(tmp) as (redis_url, _):
        env = stack_env(settings, redis_url, BILLING_API_KEY=API_KEY, METRICS_TOKEN=METRICS_TOKEN)
        worker = celery_worker(env, tmp, concurrency=1)
        try:
            with gunicorn(env, tmp, workers=2) as base:
                yield Stack(base, settings)
        finally:
            stop(worker)


def _customer(stack: Stack) -> str:
    tag = uuid.uuid4().hex[:10]
    r = httpx.post(
        stack.url("/customers"), json={"email": f"{tag}@example.com", "name": tag}, headers=AUTH
    )
    assert r.status_code == 200, r.text
    return r.json()["customer_id"]


def _entries(stack: Stack, customer_id: str) -> list[dict]:
    r = httpx.get(stack.url(f"/customers/{customer_id}/wallets/ledger-entries"), headers=AUTH)
    return r.json()["items"]


def _raw_request_line(stack: Stack, target: str) -> tuple[int, str, bytes]:
    """(status, content type, body) for ``GET target`` sent byte for byte, as no client
    library would (they refuse or rewrite such targets)."""
    parts = urlsplit(stack.base)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(
            f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n".encode()
        )
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers.get("Content-Type", ""), body


# -- non-finite numbers ---------------------------------------------------------------------


@pytest.mark.parametrize("number", ["1e400", "-1e400", "NaN", "Infinity"])
def test_a_non_finite_amount_is_a_422_naming_it_and_posts_nothing(stack: Stack, number) -> None:
    customer_id = _customer(stack)
    body = f'{{"amount": {number}, "currency": "USD", "entry_type": "credit"}}'
    r = httpx.post(
        stack.url(f"/customers/{customer_id}/wallets/ledger-entries"),
        content=body,
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert r.status_code == 422, r.text
    assert (r.json()["code"], r.json()["field"]) == ("VALIDATION_ERROR", "amount")
    assert _entries(stack, customer_id) == []


def test_a_non_finite_metadata_value_is_never_stored(stack: Stack) -> None:
    tag = uuid.uuid4().hex[:10]
    body = f'{{"email": "{tag}@example.com", "name": "x", "metadata": {{"score": 1e400}}}}'
    r = httpx.post(
        stack.url("/customers"), content=body, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert r.status_code == 422 and r.json()["field"] == "metadata.score", r.text
    listed = httpx.get(stack.url(f"/customers?email={tag}@example.com"), headers=AUTH)
    assert listed.json()["items"] == []


def test_a_signed_webhook_with_a_non_finite_number_is_refused_and_not_stored(stack: Stack) -> None:
    payload = dodo_payment(payment_id="pay_inf_" + uuid.uuid4().hex[:8])
    body = json.dumps(payload).replace('"total_amount": 2000', '"total_amount": 1e400')
    headers = dodo_headers(body)
    r = httpx.post(stack.url("/webhooks/dodo"), content=body, headers=headers)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "data.total_amount"
    with transaction(stack.settings) as s:
        stored = s.scalar(
            select(func.count())
            .select_from(InboxEvent)
            .where(InboxEvent.provider_event_id == headers["webhook-id"])
        )
    assert stored == 0


# -- metadata bounds ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "metadata",
    [{f"k{i}": "v" for i in range(51)}, {"k" * 41: "v"}, {"plan": "v" * 501}],
    ids=["51 keys", "key of 41 characters", "value of 501 characters"],
)
def test_metadata_beyond_dodos_limits_is_a_422_naming_metadata(stack: Stack, metadata) -> None:
    customer_id = _customer(stack)
    r = httpx.patch(
        stack.url(f"/customers/{customer_id}"), json={"metadata": metadata}, headers=AUTH
    )
    assert r.status_code == 422 and r.json()["field"] == "metadata", r.text
    shown = httpx.get(stack.url(f"/customers/{customer_id}"), headers=AUTH).json()
    assert shown["metadata"] == {}


# -- every answer is JSON -------------------------------------------------------------------


def test_a_routing_redirect_is_json(stack: Stack) -> None:
    status, content_type, body = _raw_request_line(stack, "/customers//cus_x/wallets")
    assert (status, content_type) == (308, "application/json")
    assert json.loads(body)["location"].endswith("/customers/cus_x/wallets")


@pytest.mark.parametrize("length", [5000, 8000])
def test_an_over_long_request_line_is_a_json_414(stack: Stack, length: int) -> None:
    target = "/customers?email=" + "a" * (length - len("/customers?email="))
    status, content_type, body = _raw_request_line(stack, target)
    assert (status, content_type) == (414, "application/json")
    assert json.loads(body)["code"] == "REQUEST_URI_TOO_LONG"


def test_a_request_line_beyond_gunicorns_maximum_is_still_refused(stack: Stack) -> None:
    # Past 8190 bytes gunicorn answers before the app can (docs/operations.md): still a 414.
    status, _, _ = _raw_request_line(stack, "/healthz?x=" + "a" * 9000)
    assert status == 414


# -- /metrics -------------------------------------------------------------------------------


def test_metrics_needs_its_token_and_labels_carry_no_client_input(stack: Stack) -> None:
    httpx.get(stack.url("/customers/cus_probe_label_leak"), headers=AUTH)
    httpx.request("PROPFIND", stack.url("/healthz"))
    refused = httpx.get(stack.url("/metrics"), headers=AUTH)  # an API key is not the token
    assert refused.status_code == 401 and refused.json()["code"] == "UNAUTHORIZED"
    r = httpx.get(stack.url("/metrics"), headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert r.status_code == 200
    assert "cus_probe_label_leak" not in r.text and "PROPFIND" not in r.text


# -- usage: an event_id of another customer -------------------------------------------------


def test_an_event_id_of_another_customer_is_reported_not_dropped(stack: Stack) -> None:
    first, second = _customer(stack), _customer(stack)
    event_id = "evt_" + uuid.uuid4().hex[:12]

    def ingest(customer_id: str) -> dict:
        event = {"event_id": event_id, "customer_id": customer_id, "event_name": "api_call"}
        r = httpx.post(stack.url("/events/ingest"), json={"events": [event]}, headers=AUTH)
        assert r.status_code == 200, r.text
        return r.json()

    assert ingest(first) == {"ingested_count": 1, "conflicts": []}
    answer = ingest(second)
    assert answer["ingested_count"] == 0
    assert [(c["index"], c["event_id"]) for c in answer["conflicts"]] == [(0, event_id)]
    stored = httpx.get(stack.url(f"/events/{event_id}"), headers=AUTH).json()
    assert stored["customer_id"] == first


# -- a bad customer id in a signed webhook --------------------------------------------------


def test_a_signed_payment_for_a_bad_customer_id_fails_that_event_clearly(stack: Stack) -> None:
    bad = "c" * 65
    payload = dodo_payment(payment_id="pay_badid_" + uuid.uuid4().hex[:8], customer_id=bad)
    body = json.dumps(payload)
    headers = dodo_headers(body)
    r = httpx.post(stack.url("/webhooks/dodo"), content=body, headers=headers)
    assert r.status_code == 200, r.text  # signed and well-formed: stored, then judged

    def failed() -> InboxEvent | None:
        with transaction(stack.settings) as s:
            event = s.scalar(
                select(InboxEvent).where(InboxEvent.provider_event_id == headers["webhook-id"])
            )
            return event if event is not None and event.status != "pending" else None

    event = wait_until(failed, timeout=30, interval=0.2, what="the event judged")
    assert event.status == "failed"
    assert event.error == (
        "ValidationFailed: data.customer.customer_id: must be at most 64 characters"
    )
    with transaction(stack.settings) as s:
        assert s.get(Customer, bad) is None
        assert (
            s.scalar(
                select(func.count())
                .select_from(LedgerEntry)
                .where(LedgerEntry.reference_object_id == payload["data"]["payment_id"])
            )
            == 0
        )


# -- the database guards itself -------------------------------------------------------------


def test_the_ledger_cannot_be_truncated(stack: Stack) -> None:
    customer_id = _customer(stack)
    credit = {"amount": 700, "currency": "USD", "entry_type": "credit"}
    r = httpx.post(
        stack.url(f"/customers/{customer_id}/wallets/ledger-entries"), json=credit, headers=AUTH
    )
    assert r.status_code == 200, r.text
    database = stack.settings.database_url.rsplit("/", 1)[1]
    dsn = make_conninfo(PG_ADMIN_DSN, dbname=database)
    with psycopg.connect(dsn, autocommit=True) as conn:  # even as the superuser
        for statement in ("TRUNCATE ledger_entries CASCADE", "TRUNCATE wallets CASCADE"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="TRUNCATE is refused"):
                conn.execute(statement)
    assert [e["amount"] for e in _entries(stack, customer_id)] == [700]
