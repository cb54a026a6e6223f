"""Provider-neutral top-up bookkeeping: credit a paid top-up, ignore a payment that is not one,
reverse a refund's share.

Effects are keyed by business ids, never by the delivery: a credit by ``payment:{payment_id}``,
a reversal by ``refund:{refund_id}``. A ``topup_payments`` row remembers every payment seen and
what it credited, so a refund knows its share and the sum of reversals stays capped.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker import ledger, notify
from worker.errors import DuplicateEntry, ValidationFailed
from worker.inbox.handling import Handled, NotReady
from worker.models import TopupPayment, TopupRefund

# Hints noted by ``worker.payments.dodo.prefetch`` for the batch's transaction
# (``session.info`` keys).
KNOWN_CUSTOMERS = "bw_known_customers"  # customer ids that exist
UNSEEN_PAYMENTS = "bw_unseen_payments"  # (provider, payment_id) with no topup_payments row


def actor_of(provider: str) -> str:
    """The actor of a provider's effects: ``webhook:dodo``, ``webhook:stripe``."""
    return f"webhook:{provider}"


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
        leg = ledger.Leg(
            customer_id=customer_id,
            currency=currency,
            amount=amount,
            is_credit=True,
            event_type="payment",
            reason=f"{provider} payment {payment_id}",
            key=ledger.system_key("payment", payment_id),
            reference_object_id=payment_id,
            actor=actor_of(provider),
        )
        # The inbox runs every handler in its own savepoint already: a concurrent post of
        # the same key rolls that back and the event is retried, then finds the key used.
        [posted] = ledger.post(session, [leg], savepoint=False)
        assert isinstance(posted, ledger.Posted)  # a credit always posts; duplicates raise
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
        leg = ledger.Leg(
            customer_id=topup.customer_id,
            currency=topup.currency,
            amount=share,
            is_credit=False,
            event_type="payment_reversal",
            reason=f"{provider} refund {refund_id} of payment {payment_id}",
            key=ledger.system_key("refund", refund_id),
            reference_object_id=refund_id,
            on_short=ledger.OnShort.TAKE,
            actor=actor_of(provider),
        )
        [posted] = ledger.post(session, [leg])
        if isinstance(posted, ledger.Posted):
            debited, entry_id = posted.entry.amount, posted.entry.id
            balance_after = posted.wallet.balance
    topup.reversed_amount += share
    session.add(
        TopupRefund(
            provider=provider,
            refund_id=refund_id,
            payment_id=payment_id,
            refund_amount=refund_amount,
            actor=actor_of(provider),
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
