"""Stripe events: a succeeded payment intent or completed checkout session credits a top-up;
``charge.refunded`` reverses it; ``charge.dispute.created`` / ``charge.dispute.closed`` hold
and take or release the disputed credit (``worker.payments.disputes``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from worker import ledger
from worker.errors import CustomerNotFound, ValidationFailed
from worker.inbox.handling import Handled
from worker.models import Customer
from worker.payments.disputes import Action, apply_dispute, dispute_amount
from worker.payments.payload import _currency, _minor_units, _obj, _str
from worker.payments.topups import (
    credit_topup,
    ignore_payment,
    lock_payment,
    refunded_so_far,
    reverse_topup,
)


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
    """Reverse what ``amount_refunded`` says was refunded beyond what earlier events reversed.

    Exactly once under at-least-once delivery and out-of-order events, even when two events of
    one charge are applied by concurrent transactions:

    - The payment row is locked (``lock_payment``) before what earlier events reversed is read,
      so concurrent events of one charge queue there and each sees what the others committed.
    - ``amount_refunded`` is the one fact every ``charge.refunded`` carries, and it only grows:
      a redelivered event, or an older one arriving late, finds nothing left to reverse. Keys
      by refund id alone cannot give that: events of API versions since 2022-11-15 list no
      refunds (``charge.refunds`` is not expanded), and a list that is there holds at most its
      first page.
    - Listed refunds name the reversal of the part they explain (``refund:{re_...}``); the rest
      is keyed by the cumulative total (``refund:{charge}:{amount_refunded}``). A refund
      reversed under one shape is counted in the other's sum, so the two never add up twice.
    """
    charge = _stripe_object(payload)
    charge_id = _str(charge, "id", "data.object.id")
    intent = charge.get("payment_intent")
    payment_id = intent if isinstance(intent, str) and intent else charge_id
    currency = _currency(charge.get("currency"), "data.object.currency")
    listed, pending = _listed_refunds(charge)
    if charge.get("amount_refunded") is None and not listed:
        raise ValidationFailed("data.object.amount_refunded", "expected the amount refunded")

    lock_payment(session, "stripe", payment_id)
    recorded = refunded_so_far(session, "stripe", payment_id)
    if charge.get("amount_refunded") is None:
        total = sum(recorded.values()) + sum(a for r, a in listed if r not in recorded)
    else:
        refunded = _minor_units(
            charge.get("amount_refunded"), "data.object.amount_refunded", allow_zero=True
        )
        total = refunded - pending  # a refund still pending is not reversed yet
    left = total - sum(recorded.values())

    results = []
    for refund_id, amount in listed:
        if refund_id in recorded:
            results.append({"refund_id": refund_id, "duplicate": True})
            continue
        piece = min(amount, left)
        if piece <= 0:
            # Reversed already as part of an earlier event's cumulative amount.
            results.append({"refund_id": refund_id, "duplicate": True, "covered": True})
            continue
        results.append(_reverse(session, payment_id, refund_id, piece, currency))
        left -= piece
    if left > 0:
        results.append(_reverse(session, payment_id, f"{charge_id}:{total}", left, currency))
    if results and all("ignored" in r for r in results):
        return Handled("ignored", {"refunds": results})
    return Handled("processed", {"refunds": results})


def _listed_refunds(charge: dict[str, Any]) -> tuple[list[tuple[str, int]], int]:
    """The succeeded refunds the charge lists, (id, amount), and the sum of those pending."""
    refunds = charge.get("refunds")
    data = refunds.get("data") if isinstance(refunds, dict) else None
    listed, pending = [], 0
    for index, refund in enumerate(data or []):
        field = f"data.object.refunds.data[{index}]"
        refund = _obj(refund, field)
        amount = _minor_units(refund.get("amount"), f"{field}.amount")
        if refund.get("status", "succeeded") != "succeeded":
            # Stripe counts a refund in amount_refunded from its creation; failed and canceled
            # ones it takes out again.
            pending += amount if refund.get("status") in ("pending", "requires_action") else 0
            continue
        listed.append((_str(refund, "id", f"{field}.id"), amount))
    return listed, pending


def _reverse(
    session: Session, payment_id: str, refund_id: str, amount: int, currency: str
) -> dict[str, Any]:
    return reverse_topup(
        session,
        provider="stripe",
        payment_id=payment_id,
        refund_id=refund_id,
        refund_amount=amount,
        refund_currency=currency,
    )


def stripe_lane(payload: dict[str, Any]) -> list[str]:
    """Whose wallet a Stripe event changes (``worker.inbox.lanes``): the customer its metadata
    names (credits), or the payment a refund or a dispute reverses (its credit names the
    customer)."""
    data = payload.get("data") if isinstance(payload, dict) else None
    obj = data.get("object") if isinstance(data, dict) else None
    if not isinstance(obj, dict):
        return []
    event_type = payload.get("type")
    if event_type in ("charge.refunded", "charge.dispute.created", "charge.dispute.closed"):
        # A charge's own id, or the disputed charge's: as the handlers key the payment.
        charge = obj.get("id") if event_type == "charge.refunded" else obj.get("charge")
        intent = obj.get("payment_intent")
        payment_id = intent if isinstance(intent, str) and intent else charge
        return [f"payment:stripe:{payment_id}"] if isinstance(payment_id, str) else []
    metadata = obj.get("metadata")
    if isinstance(metadata, dict):
        customer_id = metadata.get("wallet_customer_id") or metadata.get("customer_id")
        if ledger.is_valid_customer_id(customer_id):
            return [f"customer:{customer_id}"]
    return []


def stripe_charge_dispute(session: Session, payload: dict[str, Any]) -> Handled:
    """``charge.dispute.created`` holds the disputed credit; ``charge.dispute.closed`` with
    status ``lost`` takes it, with ``won`` (or ``warning_closed``, an inquiry that never became
    a chargeback) releases it. The payment is the dispute's payment intent (else its
    charge), as top-ups are keyed."""
    event_type = _str(payload, "type", "type")
    dispute = _stripe_object(payload)
    intent = dispute.get("payment_intent")
    payment_id = intent if isinstance(intent, str) and intent else dispute.get("charge")
    if not isinstance(payment_id, str) or not payment_id:
        raise ValidationFailed("data.object.charge", "expected the disputed charge's id")
    if event_type == "charge.dispute.created":
        action: Action = "open"
    else:
        status = dispute.get("status")
        if status == "lost":
            action = "lose"
        elif status in ("won", "warning_closed"):
            action = "win"
        else:
            return Handled("ignored", {"reason": f"dispute closed with status {status!r}"})
    currency = _currency(dispute.get("currency"), "data.object.currency")
    return apply_dispute(
        session,
        provider="stripe",
        event_type=event_type,
        dispute_id=_str(dispute, "id", "data.object.id"),
        payment_id=payment_id,
        amount=dispute_amount(dispute.get("amount"), currency, "data.object.amount"),
        currency=currency,
        action=action,
    )
