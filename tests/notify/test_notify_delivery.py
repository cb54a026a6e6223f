"""Delivery of outbox messages: signatures, retries on the configured schedule, the log, SMTP."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from email import message_from_bytes

import pytest
from aiosmtpd.controller import Controller
from cryptography.fernet import Fernet
from sqlalchemy import select

from tests.support.processes import free_port
from tests.support.receiver import Receiver, start_receiver
from worker import ledger, notify
from worker.config import Settings
from worker.infra.db import transaction
from worker.models import OutboxMessage
from worker.notify import commit_hooks, lowbalance

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
# The receiver listens on loopback, which notifications may not reach unless allowed.
LOOPBACK = "127.0.0.0/8"
SEALING_KEY = Fernet.generate_key().decode()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    """A local HTTP server verifying Standard Webhooks signatures."""
    rec, server = start_receiver()
    yield rec
    server.shutdown()


def _settings(base: Settings, receiver: Receiver, path: str, **extra: object) -> Settings:
    receiver.secrets[path] = SECRET
    return base.with_overrides(
        low_balance_thresholds="USD=1000",
        notify_webhook_url=receiver.url + path,
        notify_webhook_secret=SECRET,
        allow_private_webhook_urls=LOOPBACK,
        **extra,
    )


@pytest.fixture(autouse=True)
def _hooks() -> None:
    commit_hooks.install()  # the low-balance check runs in the entry's transaction


def _cross(s: Settings) -> str:
    """A customer whose USD wallet goes 2000 -> 400; returns the balance_low message id."""
    with transaction(s) as session:
        customer, _ = ledger.create_customer(session, email="low@example.com", name="Low")
        cid = customer.customer_id
        ledger.post_entry(session, customer_id=cid, currency="USD", amount=2000, is_credit=True)
    with transaction(s) as session:
        ledger.post_entry(session, customer_id=cid, currency="USD", amount=1600, is_credit=False)
    assert lowbalance.check_wallet(s, cid, "USD") is None  # already moved, before commit
    with transaction(s) as session:
        ids = [
            m.id
            for m in session.scalars(select(OutboxMessage))
            if m.event_type == "wallet.balance_low"
        ]
    assert ids
    return ids[0] if len(ids) == 1 else ids  # type: ignore[return-value]


def _deliver_until_final(s: Settings, message_id: str, limit: int = 10) -> list[notify.Outcome]:
    outcomes = []
    for _ in range(limit):
        outcome = notify.deliver(s, message_id)
        if outcome.status == "skipped":
            time.sleep(0.05)
            continue
        outcomes.append(outcome)
        if outcome.status != "pending":
            break
    return outcomes


def test_failed_attempts_are_retried_on_schedule_with_same_webhook_id(
    settings: Settings, receiver: Receiver
) -> None:
    path = f"/retry-{settings.database_url[:6]}"
    s = _settings(settings, receiver, path, notify_retry_schedule="0.3,0.6,5")
    message_id = _cross(s)
    receiver.failures[(path, "wallet.balance_low")] = 2
    outcomes = _deliver_until_final(s, message_id, limit=200)
    assert [o.status for o in outcomes] == ["pending", "pending", "delivered"]
    got = receiver.of(path, "wallet.balance_low", status=None)
    assert [d.status for d in got] == [503, 503, 200]
    assert all(d.verified for d in got)
    assert {d.webhook_id for d in got} == {message_id}
    # Each retry waited at least its scheduled delay (less the 10 % jitter).
    gaps = [b.received_at - a.received_at for a, b in itertools.pairwise(got)]
    assert gaps[0] >= 0.3 * 0.9 and gaps[1] >= 0.6 * 0.9
    with transaction(s) as session:
        log = notify.attempts_of(session, message_id)
        message = session.get(OutboxMessage, message_id)
    assert [(a.attempt, a.status_code) for a in log] == [(1, 503), (2, 503), (3, 200)]
    assert log[0].error == "HTTP 503" and log[2].error is None
    assert all(a.latency_ms is not None for a in log)
    assert message.status == "delivered"
    assert notify.deliver(s, message_id).status == "skipped"  # delivered stays delivered


def test_schedule_exhausted_marks_failed(settings: Settings) -> None:
    dead = f"http://127.0.0.1:{free_port()}/nobody"
    s = settings.with_overrides(
        low_balance_thresholds="USD=1000",
        notify_webhook_url=dead,
        notify_webhook_secret=SECRET,
        allow_private_webhook_urls=LOOPBACK,
        notify_retry_schedule="0,0",
    )
    message_id = _cross(s)
    outcomes = _deliver_until_final(s, message_id)
    assert [o.status for o in outcomes] == ["pending", "pending", "failed"]
    assert all(o.status_code is None and "Connect" in (o.error or "") for o in outcomes)
    with transaction(s) as session:
        assert session.get(OutboxMessage, message_id).status == "failed"


def test_endpoint_gets_only_its_events_signed_with_its_own_secret(
    settings: Settings, receiver: Receiver
) -> None:
    s = settings.with_overrides(
        low_balance_thresholds="USD=1000",
        allow_private_webhook_urls=LOOPBACK,
        endpoint_secret_key=SEALING_KEY,
    )
    path = f"/endpoint-{settings.database_url[:6]}"
    with transaction(s) as session:
        endpoint = notify.add_endpoint(session, receiver.url + path, "wallet.balance_low")
        other = notify.add_endpoint(
            session, receiver.url + "/recovered", "wallet.balance_recovered"
        )
        endpoint_id, secret = endpoint.id, notify.endpoint_secret(s, endpoint)
        assert endpoint.secret.startswith("fernet:") and secret not in endpoint.secret
    assert secret.startswith("whsec_") and notify.endpoint_secret(s, other) != secret
    receiver.secrets[path] = secret
    message_id = _cross(s)
    assert notify.deliver(s, message_id).status == "delivered"
    (delivery,) = receiver.of(path, "wallet.balance_low")
    assert delivery.verified and delivery.webhook_id == message_id
    data = delivery.payload["data"]
    assert (data["currency"], data["balance"], data["threshold"]) == ("USD", 400, 1000)
    with transaction(s) as session:
        assert session.get(OutboxMessage, message_id).endpoint_id == endpoint_id
        notify.remove_endpoint(session, endpoint_id)


def test_balance_low_email_reaches_a_real_smtp_server(settings: Settings) -> None:
    received: list[bytes] = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            received.append(envelope.content)
            return "250 OK"

    port = free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        s = settings.with_overrides(
            low_balance_thresholds="USD=1000",
            smtp_url=f"smtp://127.0.0.1:{port}",
            notify_email_to="ops@example.com",
        )
        message_id = _cross(s)
        with transaction(s) as session:
            assert session.get(OutboxMessage, message_id).channel == "email"
        assert notify.deliver(s, message_id).status == "delivered"
    finally:
        controller.stop()
    (raw,) = received
    mail = message_from_bytes(raw)
    assert mail["To"] == "ops@example.com"
    assert "Low balance" in mail["Subject"] and "USD 400 < 1000" in mail["Subject"]
    assert message_id in mail["Message-ID"]


def test_endpoints_cli_add_list_remove(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLOW_PRIVATE_WEBHOOK_URLS", LOOPBACK)
    monkeypatch.setenv("ENDPOINT_SECRET_KEY", SEALING_KEY)
    added = cli(
        "endpoints", "add", "http://127.0.0.1:1/x", "--events", "wallet.balance_low", "--json"
    )
    assert added.code == 0, added.err
    assert '"secret": "whsec_' in added.out
    listed = cli("endpoints", "list")
    assert "events=wallet.balance_low enabled" in listed.out
    assert "whsec_" not in listed.out
    bad = cli("endpoints", "add", "http://x/y", "--events", "nope")
    assert bad.code != 0 and "unknown event type(s) nope" in bad.err
