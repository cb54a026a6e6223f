"""Payment events -> wallet credits and reversals (Dodo Payments and Stripe handlers).

Effects are keyed by business ids, never by the delivery: a credit by ``payment:{payment_id}``,
a reversal by ``refund:{refund_id}``. A ``topup_payments`` row remembers every payment seen and
what it credited, so a refund knows its share and the sum of reversals stays capped.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker import ledger, notify
from worker.db import settings_of
from worker.errors import CustomerNotFound, DuplicateEntry, ValidationFailed
from worker.inbox import Handled, NotReady, handles, prefetches
from worker.models import Customer, InboxEvent, TopupPayment, TopupRefund

# Hints noted by ``_prefetch`` for the batch's transaction (``session.info`` keys).
KNOWN_CUSTOMERS = "bw_known_customers"  # customer ids that exist
UNSEEN_PAYMENTS = "bw_unseen_payments"  # (provider, payment_id) with no topup_payments row


@prefetches
def _prefetch(session: Session, events: list[InboxEvent]) -> None:
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
        if isinstance(data.get("payment_id"), str):
            payments.add(data["payment_id"])
        customer = data.get("customer")
        if isinstance(customer, dict) and isinstance(customer.get("customer_id"), str):
            customers.add(customer["customer_id"])
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


# -- payload helpers ---------------------------------------------------------------------------


def _obj(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValidationFailed(field, "expected an object")
    return value


def _str(container: dict[str, Any], key: str, field: str) -> str:
    value = container.get(key)
    if not isinstance(value, str) or not value or len(value) > 255:
        raise ValidationFailed(field, "expected a non-empty string")
    return value


def _minor_units(value: Any, field: str, *, allow_zero: bool = False) -> int:
    """An integer amount, or a numeric string of one (metadata values are strings)."""
    if isinstance(value, bool):
        raise ValidationFailed(field, "expected an integer amount in minor units")
    if isinstance(value, str) and value.strip().isdigit() and value.strip().isascii():
        value = int(value.strip())
    if not isinstance(value, int) or value < 0 or (value == 0 and not allow_zero):
        raise ValidationFailed(field, f"expected a positive integer in minor units, got {value!r}")
    return value


def _currency(value: Any, field: str) -> str:
    if not isinstance(value, str) or len(value) != 3 or not value.isalpha():
        raise ValidationFailed(field, f"expected an ISO 4217 code, got {value!r}")
    return value.upper()


# -- shared core -------------------------------------------------------------------------------


def credit_topup(
    session: Session,
    *,
    provider: str,
    payment_id: str,
    customer_id: str,
    amount: int,
    currency: str,
    payment_amount: int,
    payment_currency: str,
) -> Handled:
    """Credit a top-up payment once and remember it for its refunds."""
    unseen = session.info.get(UNSEEN_PAYMENTS, set())
    if (provider, payment_id) in unseen:
        # The batch found no row for it: nothing to lock; our INSERT below is checked by the
        # unique constraint should a concurrent event of this payment write one meanwhile.
        # A second event of the same payment in this batch must look again.
        unseen.discard((provider, payment_id))
        known = None
    else:
        # Locked: Stripe's checkout.session.completed and payment_intent.succeeded for one
        # payment may be processed concurrently.
        known = session.scalar(
            select(TopupPayment)
            .where(TopupPayment.provider == provider, TopupPayment.payment_id == payment_id)
            .with_for_update()
        )
    if known is not None and known.credited_amount > 0:
        # e.g. Stripe's payment_intent.succeeded after its checkout.session.completed
        return Handled(
            "processed",
            {"payment_id": payment_id, "duplicate": True, "entry_id": known.ledger_entry_id},
        )
    try:
        posted = ledger.post_entry(
            session,
            customer_id=customer_id,
            currency=currency,
            amount=amount,
            is_credit=True,
            event_type="payment",
            reason=f"{provider} payment {payment_id}",
            idempotency_key=ledger.system_key("payment", payment_id),
            reference_object_id=payment_id,
            # The inbox runs every handler in its own savepoint already: a concurrent post of
            # the same key rolls that back and the event is retried, then finds the key used.
            savepoint=False,
        )
        entry = posted.entry
    except DuplicateEntry as exc:
        entry = exc.entry
    if known is None:
        known = TopupPayment(provider=provider, payment_id=payment_id, reversed_amount=0)
        session.add(known)
    # An earlier event of this payment without top-up metadata recorded it as crediting
    # nothing (the intent before its checkout session): this one carries the credit.
    known.customer_id = customer_id
    known.currency = entry.currency
    known.credited_amount = entry.amount
    known.payment_amount = payment_amount
    known.payment_currency = payment_currency
    known.ledger_entry_id = entry.id
    session.flush()
    return Handled(
        "processed",
        {
            "payment_id": payment_id,
            "customer_id": customer_id,
            "currency": entry.currency,
            "credited": entry.amount,
            "entry_id": entry.id,
        },
    )


def ignore_payment(
    session: Session,
    *,
    provider: str,
    payment_id: str,
    payment_amount: int,
    payment_currency: str,
    reason: str,
) -> Handled:
    """Remember a payment that credits nothing, so its refunds are ignored rather than wait."""
    if _topup(session, provider, payment_id) is None:
        session.add(
            TopupPayment(
                provider=provider,
                payment_id=payment_id,
                credited_amount=0,
                payment_amount=payment_amount,
                payment_currency=payment_currency,
                reversed_amount=0,
            )
        )
        session.flush()
    return Handled("ignored", {"payment_id": payment_id, "reason": reason})


def reverse_topup(
    session: Session,
    *,
    provider: str,
    payment_id: str,
    refund_id: str,
    refund_amount: int,
    refund_currency: str,
) -> dict[str, Any]:
    """Debit the refunded share of a top-up, capped at what the payment credited.

    The share is ``credited * refund_amount // payment_amount`` (rounded down: a refund never
    takes more than its proportion; a full refund takes exactly the credit). Earlier reversals
    of the same payment count against the cap (``reversed_amount``). When the wallet cannot
    cover the share, what is there is debited and the rest recorded as ``shortfall``.
    Raises ``NotReady`` when the payment has not been seen yet.
    """
    # Locking the payment row serialises concurrent refunds of one payment, so the cap holds.
    topup = session.scalar(
        select(TopupPayment)
        .where(TopupPayment.provider == provider, TopupPayment.payment_id == payment_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if topup is None:
        raise NotReady(f"payment {payment_id} has not been received yet")
    done = session.scalar(
        select(TopupRefund).where(
            TopupRefund.provider == provider, TopupRefund.refund_id == refund_id
        )
    )
    if done is not None:
        return {"refund_id": refund_id, "duplicate": True, "debited": done.debited}
    if topup.credited_amount == 0:
        return {"refund_id": refund_id, "ignored": "the payment did not credit a wallet"}
    if refund_currency != topup.payment_currency:
        raise ValidationFailed(
            "currency",
            f"refund currency {refund_currency} differs from the payment's "
            f"{topup.payment_currency}",
        )
    if topup.payment_amount > 0:
        share = topup.credited_amount * refund_amount // topup.payment_amount
    else:
        share = topup.credited_amount
    share = max(0, min(share, topup.credited_amount - topup.reversed_amount))
    debited, entry_id, balance_after = 0, None, 0
    if share > 0:
        assert topup.customer_id is not None and topup.currency is not None
        # The refund already happened at the provider: take what the wallet holds and record
        # the rest as the merchant's shortfall.
        posted = ledger.post_entry(
            session,
            customer_id=topup.customer_id,
            currency=topup.currency,
            amount=share,
            is_credit=False,
            event_type="payment_reversal",
            reason=f"{provider} refund {refund_id} of payment {payment_id}",
            idempotency_key=ledger.system_key("refund", refund_id),
            reference_object_id=refund_id,
            on_short=ledger.OnShort.TAKE,
        )
        if posted is not None:
            debited, entry_id = posted.entry.amount, posted.entry.id
            balance_after = posted.wallet.balance
    topup.reversed_amount += share
    session.add(
        TopupRefund(
            provider=provider,
            refund_id=refund_id,
            payment_id=payment_id,
            refund_amount=refund_amount,
            share=share,
            debited=debited,
            shortfall=share - debited,
            ledger_entry_id=entry_id,
        )
    )
    session.flush()
    if share > debited:
        # The customer already spent the credit being refunded: the ledger cannot take it
        # back, so the merchant is told what is owed.
        notify.enqueue_event(
            session,
            "payment.refund_shortfall",
            {
                "customer_id": topup.customer_id,
                "currency": topup.currency,
                "balance": balance_after,
                "payment_id": payment_id,
                "refund_id": refund_id,
                "shortfall": share - debited,
                "ledger_entry_id": entry_id,
            },
        )
    return {
        "refund_id": refund_id,
        "payment_id": payment_id,
        "customer_id": topup.customer_id,
        "currency": topup.currency,
        "share": share,
        "debited": debited,
        "shortfall": share - debited,
        "entry_id": entry_id,
    }


def _topup(session: Session, provider: str, payment_id: str) -> TopupPayment | None:
    return session.scalar(
        select(TopupPayment).where(
            TopupPayment.provider == provider, TopupPayment.payment_id == payment_id
        )
    )


def _refund_status(result: dict[str, Any]) -> Handled:
    return Handled("ignored" if "ignored" in result else "processed", result)


# -- Dodo Payments -----------------------------------------------------------------------------


@handles("dodo", "payment.succeeded")
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
    amount, currency = credit
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
    )


def _dodo_credit(
    session: Session, data: dict[str, Any], payment_currency: str
) -> tuple[int, str] | None:
    """(amount, currency) to credit: configured top-up products first, else metadata."""
    products = settings_of(session).topup_map
    cart = data.get("product_cart") or []
    if not isinstance(cart, list):
        raise ValidationFailed("data.product_cart", "expected a list")
    total, currencies = 0, set()
    for index, item in enumerate(cart):
        item = _obj(item, f"data.product_cart[{index}]")
        spec = products.get(item.get("product_id"))  # type: ignore[arg-type]
        if spec is None:
            continue
        quantity = _minor_units(item.get("quantity", 1), f"data.product_cart[{index}].quantity")
        total += spec[0] * quantity
        currencies.add(spec[1])
    if len(currencies) > 1:
        raise ValidationFailed("data.product_cart", "top-up products in several currencies")
    if total:
        return total, currencies.pop()
    metadata = data.get("metadata") or {}
    if not isinstance(metadata, dict) or metadata.get("wallet_credit") in (None, ""):
        return None
    amount = _minor_units(metadata["wallet_credit"], "data.metadata.wallet_credit")
    currency = metadata.get("wallet_currency") or payment_currency
    return amount, _currency(currency, "data.metadata.wallet_currency")


def _dodo_customer(session: Session, customer: dict[str, Any]) -> str:
    """Our customer for Dodo's: by customer_id, else by email, else created with Dodo's id."""
    customer_id = customer.get("customer_id")
    if customer_id in session.info.get(KNOWN_CUSTOMERS, ()):
        return customer_id  # customers are never deleted: seen once in this transaction is enough
    if isinstance(customer_id, str) and customer_id:
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
    )
    return created.customer_id


@handles("dodo", "refund.succeeded")
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


# -- Stripe ------------------------------------------------------------------------------------


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
    customer_id = metadata.get("wallet_customer_id") or metadata.get("customer_id")
    if not isinstance(customer_id, str) or not customer_id:
        raise ValidationFailed(
            "data.object.metadata.wallet_customer_id", "names no customer for the credit"
        )
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


@handles("stripe", "payment_intent.succeeded")
def stripe_payment_intent_succeeded(session: Session, payload: dict[str, Any]) -> Handled:
    intent = _stripe_object(payload)
    payment_id = _str(intent, "id", "data.object.id")
    field = "amount_received" if intent.get("amount_received") else "amount"
    return _stripe_credit(session, intent, payment_id, field)


@handles("stripe", "checkout.session.completed")
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


@handles("stripe", "charge.refunded")
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
