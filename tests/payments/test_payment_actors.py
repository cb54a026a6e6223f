"""Provider effects record their provider as actor: ``webhook:dodo``, ``webhook:stripe``."""

from __future__ import annotations

from sqlalchemy import select

from tests.support.webhooks import dodo_payment, dodo_refund, stripe_event
from worker import inbox, ledger
from worker.models import Customer, LedgerEntry, TopupRefund


def apply(tx, payload: dict, provider: str = "dodo") -> None:
    """Store and process one event, as the receiver and a worker would."""
    with tx() as s:
        event_id = inbox.record_event(
            s,
            provider=provider,
            provider_event_id=f"msg_{id(payload)}",
            event_type=payload["type"],
            payload=payload,
        )
    with tx() as s:
        assert inbox.process_event(s, event_id).status == "processed"


def test_dodo_payment_refund_and_new_customer_are_webhook_dodo(tx) -> None:
    apply(tx, dodo_payment(payment_id="pay_1", wallet_credit="2000"))
    apply(tx, dodo_refund("pay_1", 500, refund_id="ref_1"))
    with tx() as s:
        entries = s.scalars(select(LedgerEntry).order_by(LedgerEntry.seq)).all()
        assert [(e.event_type, e.actor) for e in entries] == [
            ("payment", "webhook:dodo"),
            ("payment_reversal", "webhook:dodo"),
        ]
        assert s.scalar(select(TopupRefund.actor)) == "webhook:dodo"
        assert s.scalar(select(Customer.created_by)) == "webhook:dodo"


def test_stripe_payment_is_webhook_stripe(tx) -> None:
    with tx() as s:
        customer, _ = ledger.create_customer(s, email="grace@example.com", name="Grace")
    intent = {
        "id": "pi_1",
        "object": "payment_intent",
        "amount": 1500,
        "amount_received": 1500,
        "currency": "usd",
        "status": "succeeded",
        "metadata": {"wallet_customer_id": customer.customer_id, "wallet_credit": "1500"},
    }
    apply(tx, stripe_event("payment_intent.succeeded", intent), provider="stripe")
    with tx() as s:
        assert s.scalar(select(LedgerEntry.actor)) == "webhook:stripe"
