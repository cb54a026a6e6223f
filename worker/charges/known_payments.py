"""What the service knows of a payment a refund to wallet names: whose it is and how much.

Three places know a payment, looked at in this order:

1. a charge of this service (``payment_id`` is its ``charge_id``): the part of the order the
   wallet did not cover, ``requested_amount - applied_amount``. That is the part paid by card,
   the part a refund to wallet gives back instead of the card; the wallet's own part goes
   back through a reversal, which has its own bound, so the two together never return more
   than the order;
2. a top-up credited from a provider payment (``topup_payments``): the payment's amount;
3. a provider payment event stored in the inbox (any status: its signature was verified when
   it was stored) that names this customer: the payment's amount in the event. This is the
   usual case of a purchase paid through Dodo or Stripe that was not a top-up.

A payment another customer made and one never seen get the same answer, so a refund tells a
caller nothing about other customers' payments.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from worker.models import Customer, InboxEvent, TopupPayment, WalletCharge


class Whose(Enum):
    MINE = "mine"
    OTHERS = "others"
    UNSEEN = "unseen"


@dataclass(frozen=True)
class KnownPayment:
    whose: Whose
    # For MINE only: where the service knows it from, its amount (minor units) and currency.
    source: str | None = None
    amount: int | None = None
    currency: str | None = None


UNSEEN = KnownPayment(Whose.UNSEEN)
_PROVIDERS = ("dodo", "stripe")
OTHERS = KnownPayment(Whose.OTHERS)


def find_payment(session: Session, customer: Customer, payment_id: str) -> KnownPayment:
    """What the service knows of ``payment_id`` for ``customer``."""
    charge = session.get(WalletCharge, payment_id)
    if charge is not None:
        if charge.customer_id != customer.customer_id:
            return OTHERS
        return KnownPayment(
            Whose.MINE, "charge", charge.requested_amount - charge.applied_amount, charge.currency
        )
    seen_elsewhere = False
    topups = session.scalars(
        select(TopupPayment).where(
            # Naming the providers lets the (provider, payment_id) unique index find it.
            TopupPayment.provider.in_(_PROVIDERS),
            TopupPayment.payment_id == payment_id,
        )
    )
    for topup in topups:
        if topup.customer_id == customer.customer_id and topup.credited_amount > 0:
            return KnownPayment(Whose.MINE, "topup", topup.payment_amount, topup.payment_currency)
        # A payment that credited nothing names no customer here: the inbox event does.
        seen_elsewhere = seen_elsewhere or topup.customer_id is not None
    for event in _payment_events(session, payment_id):
        found = _read(event)
        if found is None:
            continue
        payer, amount, currency = found
        if _is(session, customer, payer):
            return KnownPayment(Whose.MINE, "inbox", amount, currency)
        seen_elsewhere = True
    return OTHERS if seen_elsewhere else UNSEEN


# -- the inbox: one reader per provider payment event ----------------------------------------

# (provider, event type) -> the JSON paths of the payment id in that event's payload.
_PAYMENT_ID_PATHS: dict[tuple[str, str], tuple[tuple[str, ...], ...]] = {
    ("dodo", "payment.succeeded"): (("data", "payment_id"),),
    ("stripe", "payment_intent.succeeded"): (("data", "object", "id"),),
    ("stripe", "checkout.session.completed"): (
        ("data", "object", "payment_intent"),
        ("data", "object", "id"),
    ),
}


def _payment_events(session: Session, payment_id: str) -> Iterator[InboxEvent]:
    # Refunds are rare operator actions and reach here only for a payment that is neither a
    # charge nor a credited top-up, so reading the payment events by a JSON path (no index)
    # costs less than an index every stored webhook would pay for.
    for (provider, event_type), paths in _PAYMENT_ID_PATHS.items():
        matches = [InboxEvent.payload[path].as_string() == payment_id for path in paths]
        yield from session.scalars(
            select(InboxEvent)
            .where(
                InboxEvent.provider == provider,
                InboxEvent.event_type == event_type,
                or_(*matches),
            )
            .order_by(InboxEvent.id)
        )


@dataclass(frozen=True)
class Payer:
    customer_id: str | None
    email: str | None = None  # Dodo's: the handler falls back to it


Reading = tuple[Payer, int, str]  # who paid, how much (minor units), in what currency


def _read(event: InboxEvent) -> Reading | None:
    """Who paid how much in ``event``, or None for a payload that does not say."""
    reader = _READERS[(event.provider, event.event_type)]
    try:
        return reader(event.payload)
    except (AttributeError, KeyError, TypeError, ValueError):
        return None  # a malformed payload proves no payment


def _is(session: Session, customer: Customer, payer: Payer) -> bool:
    """Whether ``payer`` is ``customer``, matched as the payment's handler matches it."""
    if payer.customer_id == customer.customer_id:
        return True
    if payer.email is None or payer.email.lower() != customer.email_normalized:
        return False
    # Dodo's handler credits the customer of Dodo's id when there is one, else by email.
    return payer.customer_id is None or session.get(Customer, payer.customer_id) is None


def _amount(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(value)
    return value


def _code(value: Any) -> str:
    if not isinstance(value, str) or len(value) != 3 or not value.isalpha():
        raise ValueError(value)
    return value.upper()


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _dodo(payload: dict[str, Any]) -> Reading | None:
    data = payload["data"]
    customer = data["customer"]
    payer = Payer(_text(customer.get("customer_id")), _text(customer.get("email")))
    return payer, _amount(data.get("total_amount", 0)), _code(data["currency"])


def _stripe_payer(obj: dict[str, Any]) -> Payer | None:
    # Stripe's own customer id is not ours: the metadata the handler reads names ours.
    metadata = obj.get("metadata") or {}
    customer_id = _text(metadata.get("wallet_customer_id")) or _text(metadata.get("customer_id"))
    return Payer(customer_id) if customer_id else None


def _stripe_intent(payload: dict[str, Any]) -> Reading | None:
    intent = payload["data"]["object"]
    payer = _stripe_payer(intent)
    if payer is None:
        return None
    amount = _amount(intent.get("amount_received") or intent["amount"])
    return payer, amount, _code(intent["currency"])


def _stripe_checkout(payload: dict[str, Any]) -> Reading | None:
    checkout = payload["data"]["object"]
    payer = _stripe_payer(checkout)
    if checkout.get("payment_status") != "paid" or payer is None:
        return None
    return payer, _amount(checkout["amount_total"]), _code(checkout["currency"])


_READERS: dict[tuple[str, str], Callable[[dict[str, Any]], Reading | None]] = {
    ("dodo", "payment.succeeded"): _dodo,
    ("stripe", "payment_intent.succeeded"): _stripe_intent,
    ("stripe", "checkout.session.completed"): _stripe_checkout,
}
