"""Disputes of top-ups through the webhook receiver, signed with the real libraries
(``standardwebhooks`` for Dodo, ``stripe`` for Stripe), payloads built from the SDKs' own
models, then applied as the worker applies the inbox: opened -> lost, opened -> won, lost
before opened, a dispute before its payment, a dispute larger than what is left."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
import stripe
from dodopayments.types import DisputeLostWebhookEvent, DisputeOpenedWebhookEvent
from sqlalchemy import select

from tests.support.webhooks import (
    DODO_SECRET,
    STRIPE_SECRET,
    dodo_headers,
    dodo_payment,
    dumps,
    stripe_event,
    stripe_headers,
)
from webhooks import create_app
from worker import inbox, ledger
from worker.infra.celery_app import app as celery_app
from worker.models import InboxEvent, LedgerEntry, OutboxMessage, TopupDispute, Wallet

CUSTOMER = "cus_8VbC6JDZzPEqfBPUdpj0K"
WEBHOOK = {
    "notify_webhook_url": "http://127.0.0.1:9/hook",
    "notify_webhook_secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
}


@pytest.fixture(autouse=True)
def _memory_broker():
    """The in-process app's enqueues go to kombu's in-memory transport; the test applies the
    inbox itself, as the worker would."""
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
def app_settings(settings):
    return settings.with_overrides(
        dodo_webhook_secret=DODO_SECRET, stripe_webhook_secret=STRIPE_SECRET, **WEBHOOK
    )


@pytest.fixture
def tx(app_settings):
    """Transactions on the app's settings (the worker's: notifications configured)."""
    from worker.infra.db import transaction

    return lambda: transaction(app_settings)


@pytest.fixture
def client(app_settings):
    """A test client with both providers enabled."""
    return create_app(app_settings).test_client()


def send_dodo(client, payload: dict) -> None:
    body = dumps(payload)
    assert client.post("/webhooks/dodo", data=body, headers=dodo_headers(body)).status_code == 200


def send_stripe(client, payload: dict) -> None:
    body = dumps(payload)
    r = client.post("/webhooks/stripe", data=body, headers=stripe_headers(body))
    assert r.status_code == 200


def drain(tx) -> None:
    """Apply every pending event once, oldest first, as the worker and its sweeper do."""
    with tx() as s:
        ids = s.scalars(
            select(InboxEvent.id).where(InboxEvent.status == "pending").order_by(InboxEvent.id)
        ).all()
    for event_id in ids:
        with tx() as s:
            inbox.process_event(s, event_id)


def dodo_dispute(kind: str, payment_id: str, dispute_id: str, amount: str = "2000") -> dict:
    """A Dodo dispute event, validated by the SDK's own model before it is sent."""
    model = {"dispute.opened": DisputeOpenedWebhookEvent, "dispute.lost": DisputeLostWebhookEvent}
    data = {
        "amount": amount,
        "business_id": "bus_local",
        "created_at": datetime.now(UTC).isoformat(),
        "currency": "USD",
        "dispute_id": dispute_id,
        "dispute_stage": "dispute",
        "dispute_status": kind.replace(".", "_"),
        "payment_id": payment_id,
    }
    event = {
        "business_id": "bus_local",
        "data": data,
        "timestamp": datetime.now(UTC).isoformat(),
        "type": kind,
    }
    cls = model.get(kind)
    if cls is not None:
        return cls.model_validate(event).model_dump(mode="json", exclude_none=True)
    return event


def wallet(tx) -> tuple[int, int]:
    with tx() as s:
        w = s.get(Wallet, (CUSTOMER, "USD"))
        return w.balance, w.held


def disputed(tx) -> list[int]:
    with tx() as s:
        return list(
            s.scalars(select(LedgerEntry.amount).where(LedgerEntry.event_type == "dispute"))
        )


def dispute_row(tx, dispute_id: str) -> TopupDispute:
    with tx() as s:
        return s.scalars(select(TopupDispute).where(TopupDispute.dispute_id == dispute_id)).one()


def check(tx) -> None:
    with tx() as s:
        report = ledger.verify(s)
    assert report.ok, report.problems


@pytest.fixture
def paid(client, tx) -> str:
    """A Dodo top-up payment that credited 2000 USD cents; its id."""
    payment = dodo_payment(total=2000, wallet_credit="2000")
    send_dodo(client, payment)
    drain(tx)
    assert wallet(tx) == (2000, 0)
    return payment["data"]["payment_id"]


def test_dodo_opened_then_lost_holds_then_debits_once(client, tx, paid) -> None:
    send_dodo(client, dodo_dispute("dispute.opened", paid, "dsp_1"))
    drain(tx)
    assert wallet(tx) == (2000, 2000)  # still the ledger's balance; nothing available
    lost = dodo_dispute("dispute.lost", paid, "dsp_1")
    send_dodo(client, lost)
    send_dodo(client, lost)  # redelivered under a new webhook id
    drain(tx)
    assert wallet(tx) == (0, 0)
    assert disputed(tx) == [2000]
    row = dispute_row(tx, "dsp_1")
    assert (row.status, row.held, row.shortfall, row.closing_event) == (
        "lost",
        2000,
        0,
        "dispute.lost",
    )
    check(tx)


@pytest.mark.parametrize("ending", ["dispute.won", "dispute.cancelled", "dispute.expired"])
def test_dodo_opened_then_won_releases_the_hold(client, tx, paid, ending: str) -> None:
    send_dodo(client, dodo_dispute("dispute.opened", paid, "dsp_2"))
    drain(tx)
    send_dodo(client, dodo_dispute(ending, paid, "dsp_2"))
    drain(tx)
    assert wallet(tx) == (2000, 0)
    assert disputed(tx) == []
    assert dispute_row(tx, "dsp_2").status == "won"


def test_dodo_accepted_takes_the_credit_like_lost(client, tx, paid) -> None:
    send_dodo(client, dodo_dispute("dispute.opened", paid, "dsp_a"))
    send_dodo(client, dodo_dispute("dispute.accepted", paid, "dsp_a"))
    drain(tx)
    assert (wallet(tx), disputed(tx)) == ((0, 0), [2000])


def test_lost_before_opened_waits_and_applies_once(client, tx, paid) -> None:
    send_dodo(client, dodo_dispute("dispute.lost", paid, "dsp_3"))
    drain(tx)
    with tx() as s:
        waiting = s.scalars(select(InboxEvent).where(InboxEvent.event_type == "dispute.lost")).one()
        assert waiting.status == "pending" and waiting.error.startswith("waiting:")
    assert wallet(tx) == (2000, 0)
    send_dodo(client, dodo_dispute("dispute.opened", paid, "dsp_3"))
    drain(tx)  # the opening first (it is older in the queue's retry order, too)
    drain(tx)
    assert wallet(tx) == (0, 0)
    assert disputed(tx) == [2000]
    check(tx)


def test_a_dispute_before_its_payment_waits_for_it(client, tx) -> None:
    payment = dodo_payment(total=2000, wallet_credit="2000")
    pid = payment["data"]["payment_id"]
    send_dodo(client, dodo_dispute("dispute.opened", pid, "dsp_4"))
    drain(tx)
    send_dodo(client, payment)
    drain(tx)
    drain(tx)
    assert wallet(tx) == (2000, 2000)


def test_a_dispute_larger_than_what_is_left_holds_what_is_there(
    client, tx, paid, app_settings
) -> None:
    with tx() as s:
        ledger.post(s, [ledger.Leg(CUSTOMER, "USD", 1500, is_credit=False)])
    send_dodo(client, dodo_dispute("dispute.opened", paid, "dsp_5"))
    drain(tx)
    assert wallet(tx) == (500, 500)
    with tx() as s:
        event = s.scalars(select(InboxEvent).where(InboxEvent.event_type == "dispute.opened")).one()
        assert (event.result["share"], event.result["held"], event.result["shortfall"]) == (
            2000,
            500,
            1500,
        )
        [notice] = s.scalars(
            select(OutboxMessage).where(OutboxMessage.event_type == "payment.dispute_shortfall")
        ).all()
        assert notice.payload["data"]["shortfall"] == 1500
    send_dodo(client, dodo_dispute("dispute.lost", paid, "dsp_5"))
    drain(tx)
    assert (wallet(tx), disputed(tx)) == ((0, 0), [500])
    check(tx)


def test_a_dispute_never_holds_more_than_refunds_left(client, tx, paid) -> None:
    from tests.support.webhooks import dodo_refund

    send_dodo(client, dodo_refund(paid, 1200))
    drain(tx)
    assert wallet(tx) == (800, 0)
    send_dodo(client, dodo_dispute("dispute.opened", paid, "dsp_6"))
    drain(tx)
    assert wallet(tx) == (800, 800)
    assert dispute_row(tx, "dsp_6").share == 800


def test_a_decimal_dispute_amount_is_converted_by_the_minor_unit(client, tx, paid) -> None:
    send_dodo(client, dodo_dispute("dispute.opened", paid, "dsp_7", amount="12.34"))
    drain(tx)
    assert wallet(tx) == (2000, 1234)
    send_dodo(client, dodo_dispute("dispute.opened", paid, "dsp_8", amount="1.234"))
    drain(tx)
    with tx() as s:
        failed = s.scalars(select(InboxEvent).where(InboxEvent.status == "failed")).one()
        assert "data.amount" in failed.error


def stripe_dispute(event_type: str, dispute_id: str, status: str, amount: int = 1500) -> dict:
    obj = stripe.Dispute.construct_from(
        {
            "id": dispute_id,
            "object": "dispute",
            "amount": amount,
            "currency": "usd",
            "charge": "ch_1",
            "payment_intent": "pi_1",
            "status": status,
            "reason": "fraudulent",
        },
        key=None,
    ).to_dict()
    return stripe_event(event_type, obj)


@pytest.fixture
def stripe_paid(client, tx) -> str:
    with tx() as s:
        ledger.create_customer(s, email="grace@example.com", name="G", customer_id=CUSTOMER)
    intent = {
        "id": "pi_1",
        "object": "payment_intent",
        "amount": 1500,
        "amount_received": 1500,
        "currency": "usd",
        "status": "succeeded",
        "metadata": {"wallet_customer_id": CUSTOMER, "wallet_credit": "1500"},
    }
    send_stripe(client, stripe_event("payment_intent.succeeded", intent))
    drain(tx)
    assert wallet(tx) == (1500, 0)
    return "pi_1"


@pytest.mark.parametrize(
    ("status", "after", "taken"), [("lost", (0, 0), [1500]), ("won", (1500, 0), [])]
)
def test_stripe_created_then_closed(client, tx, stripe_paid, status, after, taken) -> None:
    dispute_id = "dp_" + uuid.uuid4().hex[:10]
    send_stripe(client, stripe_dispute("charge.dispute.created", dispute_id, "needs_response"))
    drain(tx)
    assert wallet(tx) == (1500, 1500)
    closed = stripe_dispute("charge.dispute.closed", dispute_id, status)
    send_stripe(client, closed)
    drain(tx)
    assert (wallet(tx), disputed(tx)) == (after, taken)
    check(tx)


def test_stripe_closed_before_created_waits(client, tx, stripe_paid) -> None:
    send_stripe(client, stripe_dispute("charge.dispute.closed", "dp_x", "lost"))
    drain(tx)
    assert wallet(tx) == (1500, 0)
    send_stripe(client, stripe_dispute("charge.dispute.created", "dp_x", "needs_response"))
    drain(tx)
    drain(tx)
    assert (wallet(tx), disputed(tx)) == ((0, 0), [1500])


def test_a_dispute_hold_cannot_be_released_or_captured_through_the_api(client, tx, paid) -> None:
    send_dodo(client, dodo_dispute("dispute.opened", paid, "dsp_api"))
    drain(tx)
    hold_id = dispute_row(tx, "dsp_api").hold_id
    auth = {"Authorization": "Bearer test-key"}
    for action in ("release", "capture"):
        r = client.post(f"/customers/{CUSTOMER}/wallets/holds/{hold_id}/{action}", headers=auth)
        assert (r.status_code, r.json["field"]) == (422, "hold_id")
    listed = client.get(f"/customers/{CUSTOMER}/wallets/holds?kind=dispute", headers=auth).json
    assert [(h["hold_id"], h["kind"], h["expires_at"]) for h in listed["items"]] == [
        (hold_id, "dispute", None)
    ]
    assert wallet(tx) == (2000, 2000)
