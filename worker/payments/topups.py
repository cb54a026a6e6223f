"""Provider-neutral top-up bookkeeping: credit a paid top-up, ignore a payment that is not one,
reverse a refund's share.

Effects are keyed by business ids, never by the delivery: a credit by ``payment:{payment_id}``,
a reversal by ``refund:{refund_id}``. A ``topup_payments`` row remembers every payment seen and
what it credited, so a refund knows its share and the sum of reversals stays capped.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker import ledger, notify
from worker.errors import DuplicateEntry, ValidationFailed
from worker.inbox.handling import Handled, NotReady
from worker.ledger.credit_terms import lot_of_entry
from worker.models import TopupPayment, TopupRefund, utcnow

# Hints noted by ``worker.payments.dodo.prefetch`` for the batch's transaction
# (``session.info`` keys).
KNOWN_CUSTOMERS = "bw_known_customers"  # customer ids that exist
CHECKED_CUSTOMERS = "bw_checked_customers"  # customer ids looked up already (found or not)
UNSEEN_PAYMENTS = "bw_unseen_payments"  # (provider, payment_id) with no topup_payments row

# A top-up processed after its validity ended (an inbox backlog, a replay) is still credited,
# since the customer paid, and its lot lapses this long after (the ledger refuses an expiry
# that is not in the future): the ledger shows the credit and its expiration, and only a debit
# in that second could spend any of it.
LATE_TOPUP_GRACE = timedelta(seconds=1)


def topup_expiry(paid_at: datetime, validity: timedelta | None) -> datetime | None:
    """When a top-up bought at ``paid_at`` with ``validity`` lapses (None: never).

    Validity counts from the payment, not from when it was processed: the customer paid then,
    and a redelivered or replayed event gets the same expiry, so the same fingerprint.
    """
    if validity is None:
        return None
    return max(paid_at + validity, utcnow() + LATE_TOPUP_GRACE)


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
    expires_at: datetime | None = None,
) -> Handled:
    """Credit a top-up payment once and remember it for its refunds; ``expires_at`` is when
    its lot lapses (``topup_expiry``; None: never)."""
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
            reference_object_id=payment_id,
            key=ledger.system_key("payment", payment_id),
            expires_at=expires_at,
            actor=actor_of(provider),
        )
        # The inbox runs every handler in its own savepoint already: a concurrent post of the
        # same key rolls that back and the event is retried, then finds the key used.
        posted = ledger.post(session, [leg], savepoint=False)[0]
        assert isinstance(posted, ledger.Posted)
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


def lock_payment(session: Session, provider: str, payment_id: str) -> TopupPayment:
    """The payment's row, locked until commit; ``NotReady`` when it has not been seen yet.

    Every refund of a payment takes this lock before it reads what earlier refunds reversed,
    so concurrent refunds of one payment queue here and each sees what the others committed.
    """
    topup = session.scalar(
        select(TopupPayment)
        .where(TopupPayment.provider == provider, TopupPayment.payment_id == payment_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if topup is None:
        raise NotReady(f"payment {payment_id} has not been received yet")
    return topup


def refunded_so_far(session: Session, provider: str, payment_id: str) -> dict[str, int]:
    """Refund id -> refund amount (the payment's currency) of every refund of the payment
    applied so far. Read it under ``lock_payment``."""
    rows = session.execute(
        select(TopupRefund.refund_id, TopupRefund.refund_amount).where(
            TopupRefund.provider == provider, TopupRefund.payment_id == payment_id
        )
    )
    return {refund_id: amount for refund_id, amount in rows}


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
    topup = lock_payment(session, provider, payment_id)
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
        # the rest as the merchant's shortfall. What is taken back is first the top-up's own
        # lot, then the other live lots, soonest to expire first; once its own lot has
        # expired (or was used up) only the others are live, and the ledger takes from them.
        leg = ledger.Leg(
            customer_id=topup.customer_id,
            currency=topup.currency,
            amount=share,
            is_credit=False,
            event_type="payment_reversal",
            reason=f"{provider} refund {refund_id} of payment {payment_id}",
            reference_object_id=refund_id,
            key=ledger.system_key("refund", refund_id),
            on_short=ledger.OnShort.TAKE,
            lot_id=lot_of_entry(session, topup.ledger_entry_id),
            actor=actor_of(provider),
        )
        posted = ledger.post(session, [leg])[0]
        assert not isinstance(posted, ledger.Replayed)  # duplicates raise
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
