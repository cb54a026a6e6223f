"""Refunds to wallet: support refunds a purchase into the wallet instead of to the card."""

from __future__ import annotations

from sqlalchemy.orm import Session

from worker import ledger
from worker.charges.views import (
    Refund,
    _identifier,
    _reason,
)
from worker.errors import (
    DuplicateEntry,
    IdempotencyKeyReused,
    RefundCapExceeded,
)
from worker.infra.db import settings_of


def refund_to_wallet(
    session: Session,
    customer_id: str,
    amount: int,
    currency: str,
    payment_id: str,
    refund_id: str | None = None,
    reason: str | None = None,
    actor: str = "system",
) -> Refund:
    """Credit a refund of ``payment_id`` to the wallet (``refund``), once per refund.

    The key is ``wallet_refund:{refund_id}``, or ``wallet_refund:{payment_id}:{amount}`` when
    no refund id is given (so two equal refunds of one payment need distinct refund ids).
    Amounts above ``WALLET_REFUND_MAX`` raise ``RefundCapExceeded``; a retry of a refund
    already credited is answered as a replay even if the cap was lowered since.
    """
    amount = ledger.validate_amount(amount)
    currency = ledger.validate_currency(session, currency)
    payment_id = _identifier(payment_id, "payment_id")
    refund_id = _identifier(refund_id, "refund_id", required=False)
    reason = _reason(reason)
    ledger.get_customer(session, customer_id)
    key = (
        ledger.system_key("wallet_refund", refund_id)
        if refund_id
        else ledger.system_key("wallet_refund", payment_id, amount)
    )

    cap = settings_of(session).wallet_refund_max
    if cap is not None and amount > cap and ledger.find_entry(session, customer_id, key) is None:
        raise RefundCapExceeded(requested=amount, cap=cap, currency=currency)
    try:
        leg = ledger.Leg(
            customer_id=customer_id,
            currency=currency,
            amount=amount,
            is_credit=True,
            event_type="refund",
            reason=reason,
            key=key,
            reference_object_id=payment_id,
            actor=actor,
        )
        [posted] = ledger.post(session, [leg])
        assert isinstance(posted, ledger.Posted)  # a credit always posts; duplicates raise
    except DuplicateEntry as duplicate:
        wallet = ledger.get_wallet(session, customer_id, currency)
        return Refund(duplicate.entry, wallet, refund_id, replayed=True)
    except IdempotencyKeyReused as reused:
        # Name the caller's fields, not the ledger's.
        names = {"reference_object_id": "payment_id"}
        fields = [names.get(f, f) for f in reused.fields]
        raise IdempotencyKeyReused(refund_id or key.value, fields, reused.original) from None
    return Refund(posted.entry, posted.wallet, refund_id)
