"""Stripe events: a succeeded payment intent or completed checkout session credits a top-up;
``charge.refunded`` reverses it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker import ledger
from worker.errors import CustomerNotFound, ValidationFailed
from worker.inbox.handling import Handled
from worker.models import Customer, TopupRefund
from worker.payments.payload import _currency, _minor_units, _obj, _str
from worker.payments.topups import credit_topup, ignore_payment, reverse_topup


def _stripe_object(payload: dict[str, Any]) -> dict[str, Any]:
    return _obj(_obj(payload.get("data"), "data").get("object"), "data.object")


def _stripe_credit(
    session: Session, obj: dict[str, Any], payment_id: str, amount_field: str
) -> Handled:
    payment_currency = _currency(obj.get("currency"), "data.object.currency")
    payment_amount = _minor_units(
        obj.get(amount_field) or 0, f"data.object.{amount_field}", allow_zero=True
    )
    metadata = obj.get("metadata") or {}
    if not isinstance(metadata, dict) or metadata.get("wallet_credit") in (None, ""):
        return ignore_payment(
            session,
            provider="stripe",
            payment_id=payment_id,
            payment_amount=payment_amount,
            payment_currency=payment_currency,
            reason="not a wallet top-up (no metadata.wallet_credit)",
        )
    amount = _minor_units(metadata["wallet_credit"], "data.object.metadata.wallet_credit")
    currency = _currency(
        metadata.get("wallet_currency") or payment_currency,
        "data.object.metadata.wallet_currency",
    )
    field = "data.object.metadata." + (
        "wallet_customer_id" if metadata.get("wallet_customer_id") else "customer_id"
    )
    customer_id = metadata.get("wallet_customer_id") or metadata.get("customer_id")
    if not isinstance(customer_id, str) or not customer_id:
        raise ValidationFailed(
            "data.object.metadata.wallet_customer_id", "names no customer for the credit"
        )
    # The API's rule, before the id reaches a query: a NUL or an over-long id fails this event
    # naming the field, instead of a database error.
    ledger.validate_customer_id(customer_id, field)
    if session.get(Customer, customer_id) is None:
        raise CustomerNotFound(customer_id)
    return credit_topup(
        session,
        provider="stripe",
        payment_id=payment_id,
        customer_id=customer_id,
        amount=amount,
        currency=currency,
        payment_amount=payment_amount,
        payment_currency=payment_currency,
    )


def stripe_payment_intent_succeeded(session: Session, payload: dict[str, Any]) -> Handled:
    intent = _stripe_object(payload)
    payment_id = _str(intent, "id", "data.object.id")
    field = "amount_received" if intent.get("amount_received") else "amount"
    return _stripe_credit(session, intent, payment_id, field)


def stripe_checkout_session_completed(session: Session, payload: dict[str, Any]) -> Handled:
    checkout = _stripe_object(payload)
    if checkout.get("payment_status") != "paid":
        return Handled("ignored", {"reason": f"payment_status {checkout.get('payment_status')!r}"})
    # Keyed by the payment intent when there is one, so the intent's own event is a duplicate.
    intent = checkout.get("payment_intent")
    payment_id = intent if isinstance(intent, str) and intent else checkout.get("id")
    if not isinstance(payment_id, str) or not payment_id:
        raise ValidationFailed("data.object.id", "expected a non-empty string")
    return _stripe_credit(session, checkout, payment_id, "amount_total")


def stripe_charge_refunded(session: Session, payload: dict[str, Any]) -> Handled:
    charge = _stripe_object(payload)
    charge_id = _str(charge, "id", "data.object.id")
    intent = charge.get("payment_intent")
    payment_id = intent if isinstance(intent, str) and intent else charge_id
    currency = _currency(charge.get("currency"), "data.object.currency")
    refunds = (
        (charge.get("refunds") or {}).get("data")
        if isinstance(charge.get("refunds"), dict)
        else None
    )
    results = []
    if refunds:
        for index, refund in enumerate(refunds):
            refund = _obj(refund, f"data.object.refunds.data[{index}]")
            if refund.get("status", "succeeded") != "succeeded":
                continue
            results.append(
                reverse_topup(
                    session,
                    provider="stripe",
                    payment_id=payment_id,
                    refund_id=_str(refund, "id", f"data.object.refunds.data[{index}].id"),
                    refund_amount=_minor_units(
                        refund.get("amount"), f"data.object.refunds.data[{index}].amount"
                    ),
                    refund_currency=currency,
                )
            )
    else:
        # Recent API versions do not expand charge.refunds: amount_refunded is cumulative, so
        # reverse only what earlier events of this charge have not.
        total = _minor_units(charge.get("amount_refunded"), "data.object.amount_refunded")
        earlier = sum(
            session.scalars(
                select(TopupRefund.refund_amount).where(
                    TopupRefund.provider == "stripe", TopupRefund.payment_id == payment_id
                )
            )
        )
        if total > earlier:
            results.append(
                reverse_topup(
                    session,
                    provider="stripe",
                    payment_id=payment_id,
                    refund_id=f"{charge_id}:{total}",
                    refund_amount=total - earlier,
                    refund_currency=currency,
                )
            )
    if results and all("ignored" in r for r in results):
        return Handled("ignored", {"refunds": results})
    return Handled("processed", {"refunds": results})
