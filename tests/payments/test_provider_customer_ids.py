"""Customer ids from signed provider webhooks are held to the API's rule (1 to 64 characters,
no NUL): a bad one fails that event, naming the field, and nothing is stored under it."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from tests.support.webhooks import dodo_payment, stripe_event
from worker import inbox
from worker.models import Customer, InboxEvent, LedgerEntry

BAD_IDS = {"65 characters": "c" * 65, "NUL": "cus_\x00x", "not a string": 12345}


def _receive_and_process(tx, payload, provider: str = "dodo") -> InboxEvent:
    with tx() as s:
        stored = inbox.record_event(
            s,
            provider=provider,
            provider_event_id=payload.get("id") or "msg_" + payload["data"].get("payment_id", ""),
            event_type=payload["type"],
            payload=payload,
        )
    with tx() as s:
        inbox.process_event(s, stored)
    with tx() as s:
        return s.get(InboxEvent, stored)


def _counts(tx) -> tuple[int, int]:
    with tx() as s:
        return (
            s.scalar(select(func.count()).select_from(Customer)),
            s.scalar(select(func.count()).select_from(LedgerEntry)),
        )


@pytest.mark.parametrize("bad", BAD_IDS.values(), ids=BAD_IDS.keys())
def test_a_dodo_payment_with_a_bad_customer_id_fails_naming_the_field(tx, bad) -> None:
    event = _receive_and_process(tx, dodo_payment(payment_id="pay_bad", customer_id=bad))
    assert event.status == "failed"
    assert event.error.startswith("ValidationFailed: data.customer.customer_id: ")
    assert _counts(tx) == (0, 0)


def test_a_dodo_payment_with_a_64_character_customer_id_is_credited(tx) -> None:
    event = _receive_and_process(tx, dodo_payment(payment_id="pay_ok", customer_id="c" * 64))
    assert event.status == "processed", event.error
    assert _counts(tx) == (1, 1)


def test_a_bad_id_in_a_batch_fails_only_its_own_event(tx) -> None:
    payloads = [
        dodo_payment(payment_id="pay_good", customer_id="cus_good", email="g@example.com"),
        dodo_payment(payment_id="pay_\x00", customer_id="cus_\x00", email="b@example.com"),
    ]
    with tx() as s:
        for n, payload in enumerate(payloads):
            inbox.record_event(
                s,
                provider="dodo",
                provider_event_id=f"msg_{n}",
                event_type=payload["type"],
                payload=payload,
            )
    with tx() as s:
        inbox.process_pending(s)
    with tx() as s:
        statuses = dict(s.execute(select(InboxEvent.provider_event_id, InboxEvent.status)).all())
    assert statuses == {"msg_0": "processed", "msg_1": "failed"}
    assert _counts(tx) == (1, 1)


@pytest.mark.parametrize("bad", ["c" * 65, "cus_\x00x"], ids=["65 characters", "NUL"])
def test_a_stripe_credit_naming_a_bad_customer_id_fails_naming_the_field(tx, bad) -> None:
    intent = {
        "id": "pi_bad",
        "object": "payment_intent",
        "amount": 1500,
        "amount_received": 1500,
        "currency": "usd",
        "status": "succeeded",
        "metadata": {"wallet_customer_id": bad, "wallet_credit": "1500"},
    }
    event = _receive_and_process(tx, stripe_event("payment_intent.succeeded", intent), "stripe")
    assert event.status == "failed"
    assert event.error.startswith("ValidationFailed: data.object.metadata.wallet_customer_id: ")
    assert _counts(tx) == (0, 0)
