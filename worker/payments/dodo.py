"""Dodo Payments events: `payment.succeeded` credits a top-up, `refund.succeeded` reverses it,
the `dispute.*` events hold, take or release the disputed credit (``worker.payments.disputes``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker import ledger
from worker.errors import ValidationFailed
from worker.inbox.handling import Handled
from worker.infra.db import settings_of
from worker.models import Customer, InboxEvent, TopupPayment, utcnow
from worker.payments.disputes import Action, apply_dispute, dispute_amount
from worker.payments.payload import _currency, _minor_units, _obj, _str, _timestamp, is_valid_key
from worker.payments.topups import (
    CHECKED_CUSTOMERS,
    KNOWN_CUSTOMERS,
    UNSEEN_PAYMENTS,
    _refund_status,
    credit_topup,
    ignore_payment,
    reverse_topup,
    topup_expiry,
)


def prefetch(session: Session, events: list[InboxEvent]) -> None:
    """Two queries for a batch of Dodo payments instead of two per payment: which of their
    customers exist, and which payments are new. Malformed payloads are left to the handler."""
    customers: set[str] = set()
    payments: set[str] = set()
    for event in events:
        if (event.provider, event.event_type) != ("dodo", "payment.succeeded"):
            continue
        data = event.payload.get("data") if isinstance(event.payload, dict) else None
        if not isinstance(data, dict):
            continue
        # Only values the handler would accept: one NUL in a query parameter would fail the
        # whole batch here, outside any event's savepoint, instead of failing that one event.
        if is_valid_key(data.get("payment_id")):
            payments.add(data["payment_id"])
        customer = data.get("customer")
        if isinstance(customer, dict) and ledger.is_valid_customer_id(customer.get("customer_id")):
            customers.add(customer["customer_id"])
    customers -= session.info.get(CHECKED_CUSTOMERS, set())  # the inbox's lanes looked them up
    if customers:
        found = session.scalars(
            select(Customer.customer_id).where(Customer.customer_id.in_(customers))
        )
        session.info.setdefault(KNOWN_CUSTOMERS, set()).update(found)
    if payments:
        seen = set(
            session.scalars(
                select(TopupPayment.payment_id).where(
                    TopupPayment.provider == "dodo", TopupPayment.payment_id.in_(payments)
                )
            )
        )
        session.info[UNSEEN_PAYMENTS] = {("dodo", p) for p in payments - seen}


def dodo_payment_succeeded(session: Session, payload: dict[str, Any]) -> Handled:
    data = _obj(payload.get("data"), "data")
    payment_id = _str(data, "payment_id", "data.payment_id")
    payment_currency = _currency(data.get("currency"), "data.currency")
    payment_amount = _minor_units(data.get("total_amount", 0), "data.total_amount", allow_zero=True)
    credit = _dodo_credit(session, data, payment_currency)
    if credit is None:
        return ignore_payment(
            session,
            provider="dodo",
            payment_id=payment_id,
            payment_amount=payment_amount,
            payment_currency=payment_currency,
            reason="not a wallet top-up (no TOPUP_PRODUCTS product, no metadata.wallet_credit)",
        )
    amount, currency, validity = credit
    expires_at = None
    if validity is not None:
        paid_at = data.get("created_at")
        try:
            expires_at = topup_expiry(
                utcnow() if paid_at is None else _timestamp(paid_at, "data.created_at"), validity
            )
        except OverflowError:  # a payment time at the edge of the calendar
            raise ValidationFailed("data.created_at", f"out of range: {paid_at!r}") from None
    customer_id = _dodo_customer(session, _obj(data.get("customer"), "data.customer"))
    return credit_topup(
        session,
        provider="dodo",
        payment_id=payment_id,
        customer_id=customer_id,
        amount=amount,
        currency=currency,
        payment_amount=payment_amount,
        payment_currency=payment_currency,
        expires_at=expires_at,
    )


def _dodo_credit(
    session: Session, data: dict[str, Any], payment_currency: str
) -> tuple[int, str, timedelta | None] | None:
    """(amount, currency, validity) to credit: configured top-up products first, else
    metadata (which never expires)."""
    products = settings_of(session).topup_map
    cart = data.get("product_cart") or []
    if not isinstance(cart, list):
        raise ValidationFailed("data.product_cart", "expected a list")
    total, currencies, validities = 0, set(), []
    for index, item in enumerate(cart):
        item = _obj(item, f"data.product_cart[{index}]")
        spec = products.get(item.get("product_id"))  # type: ignore[arg-type]
        if spec is None:
            continue
        quantity = _minor_units(item.get("quantity", 1), f"data.product_cart[{index}].quantity")
        total += spec.amount * quantity
        currencies.add(spec.currency)
        validities.append(spec.validity)
    if len(currencies) > 1:
        raise ValidationFailed("data.product_cart", "top-up products in several currencies")
    if total:
        # One payment is one credit and one lot. Products of several validities in one cart
        # take the longest (no validity is longest): no credit bought lapses earlier than
        # its product promised.
        validity = None if None in validities else max(validities)  # type: ignore[type-var]
        return total, currencies.pop(), validity
    metadata = data.get("metadata") or {}
    if not isinstance(metadata, dict) or metadata.get("wallet_credit") in (None, ""):
        return None
    amount = _minor_units(metadata["wallet_credit"], "data.metadata.wallet_credit")
    currency = metadata.get("wallet_currency") or payment_currency
    return amount, _currency(currency, "data.metadata.wallet_currency"), None


def _dodo_customer(session: Session, customer: dict[str, Any]) -> str:
    """Our customer for Dodo's: by customer_id, else by email, else created with Dodo's id."""
    customer_id = customer.get("customer_id")
    if customer_id is not None and customer_id != "":
        # Held to the API's rule before anything is looked up or stored under it: an id the
        # API cannot address (too long, NUL) fails this event, naming the field.
        ledger.validate_customer_id(customer_id, "data.customer.customer_id")
    if customer_id in session.info.get(KNOWN_CUSTOMERS, ()):
        return customer_id  # customers are never deleted: seen once in this transaction is enough
    if customer_id:
        known = select(Customer.customer_id).where(Customer.customer_id == customer_id)
        if session.scalar(known) is not None:  # no object to load: only whether it exists
            return customer_id
    email = _str(customer, "email", "data.customer.email")
    existing = ledger.find_customer_by_email(session, email)
    if existing is not None:
        return existing.customer_id
    name = customer.get("name") if isinstance(customer.get("name"), str) else None
    created, _ = ledger.create_customer(
        session,
        email=email,
        name=name or email,
        phone_number=customer.get("phone_number") or None,
        customer_id=customer_id if isinstance(customer_id, str) and customer_id else None,
        actor="webhook:dodo",
    )
    return created.customer_id


def dodo_refund_succeeded(session: Session, payload: dict[str, Any]) -> Handled:
    data = _obj(payload.get("data"), "data")
    return _refund_status(
        reverse_topup(
            session,
            provider="dodo",
            payment_id=_str(data, "payment_id", "data.payment_id"),
            refund_id=_str(data, "refund_id", "data.refund_id"),
            refund_amount=_minor_units(data.get("amount"), "data.amount"),
            refund_currency=_currency(data.get("currency"), "data.currency"),
        )
    )


def dodo_lane(payload: dict[str, Any]) -> list[str]:
    """Whose wallet a Dodo event changes, as the handler would find it (``worker.inbox.lanes``):
    a refund's or a dispute's payment first (its credit names the customer), then the customer
    id, then the email by which the handler finds or creates the customer."""
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, dict):
        return []
    lanes = []
    event_type = payload.get("type")
    reverses_payment = event_type == "refund.succeeded" or event_type in DISPUTE_ACTIONS
    if reverses_payment and is_valid_key(data.get("payment_id")):
        lanes.append(f"payment:dodo:{data['payment_id']}")
    customer = data.get("customer")
    if isinstance(customer, dict):
        customer_id = customer.get("customer_id")
        if ledger.is_valid_customer_id(customer_id):
            lanes.append(f"customer:{customer_id}")
        email = customer.get("email")
        if isinstance(email, str) and email.strip():
            lanes.append(f"email:{email.strip().lower()}")
    return lanes


# Dodo's dispute events -> what each does to the disputed credit.
DISPUTE_ACTIONS: dict[str, Action] = {
    "dispute.opened": "open",
    "dispute.lost": "lose",
    "dispute.accepted": "lose",
    "dispute.won": "win",
    "dispute.cancelled": "win",
    "dispute.expired": "win",
}


def dodo_dispute(session: Session, payload: dict[str, Any]) -> Handled:
    """Any ``dispute.*`` event (the SDK's ``Dispute*WebhookEvent``): ``data`` is the dispute,
    with ``payment_id`` and ``amount`` as a string (see ``disputes.dispute_amount``)."""
    event_type = _str(payload, "type", "type")
    action = DISPUTE_ACTIONS.get(event_type)
    if action is None:
        return Handled("ignored", {"reason": f"no handler for {event_type!r}"})
    data = _obj(payload.get("data"), "data")
    currency = _currency(data.get("currency"), "data.currency")
    return apply_dispute(
        session,
        provider="dodo",
        event_type=event_type,
        dispute_id=_str(data, "dispute_id", "data.dispute_id"),
        payment_id=_str(data, "payment_id", "data.payment_id"),
        amount=dispute_amount(data.get("amount"), currency, "data.amount"),
        currency=currency,
        action=action,
    )
