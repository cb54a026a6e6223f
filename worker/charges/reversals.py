"""Reversals: a cancelled order gives the wallet part of its charge back, at most once per
reversal id and never more than was charged.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from worker import ledger
from worker.charges.checkout import _view
from worker.charges.views import (
    Reversal,
    _identifier,
    _reason,
    _reversal_prefix,
)
from worker.errors import (
    ChargeNotFound,
    IdempotencyKeyReused,
    ReversalExceedsCharge,
)
from worker.models import WalletCharge


def reverse(
    session: Session,
    customer_id: str,
    charge_id: str,
    amount: int | None = None,
    reason: str | None = None,
    idempotency_key: str | None = None,
    actor: str = "system",
) -> Reversal:
    """Credit back ``amount`` of the charge (default: all that is left), ``payment_reversal``.

    Raises ``ReversalExceedsCharge`` for more than is left. With nothing left and no amount
    it is a no-op (``entry`` None), so "give the wallet part back" is safe to retry.
    """
    if amount is not None:
        amount = ledger.validate_amount(amount)
    reason = _reason(reason)
    client_key = _identifier(idempotency_key, "idempotency_key", required=False)
    ledger.get_customer(session, customer_id)
    # Lock the charge row: concurrent reversals of one charge queue here and each sees the
    # reversed_amount the previous one committed (SQLite's write lock already serialises).
    record = session.scalar(
        select(WalletCharge)
        .where(WalletCharge.customer_id == customer_id, WalletCharge.charge_id == charge_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if record is None:
        raise ChargeNotFound(charge_id)

    entry_key = None
    if client_key is not None:
        entry_key = ledger.system_key(f"{_reversal_prefix(charge_id)}key", client_key)
        prior = ledger.find_entry(session, customer_id, entry_key)
        if prior is not None:
            differing = [
                name
                for name, asked, recorded in (
                    ("amount", amount, prior.amount),
                    ("reason", reason, prior.reason),
                )
                if (asked is not None or name == "reason") and asked != recorded
            ]
            if differing:
                raise IdempotencyKeyReused(client_key, differing, prior)
            return Reversal(view=_view(session, record), entry=None, replayed=True)

    reversible = record.applied_amount - record.reversed_amount
    if amount is None:
        amount = reversible
    elif amount > reversible:
        raise ReversalExceedsCharge(requested=amount, reversible=reversible, charge_id=charge_id)
    if amount == 0:
        return Reversal(view=_view(session, record), entry=None)

    # Without a client key the entry is keyed by how much had been reversed before it: unique
    # per charge (reversed_amount only grows), so no two reversal entries can ever collide.
    entry_key = entry_key or ledger.system_key(
        f"{_reversal_prefix(charge_id)}at", record.reversed_amount
    )
    # One savepoint: the charge's reversed_amount and the credit move together even when the
    # credit is refused (a balance pushed past the JSON-safe limit) and the caller carries on.
    with session.begin_nested():
        # The conditional UPDATE is the second guard behind the row lock, and the CHECK
        # (reversed_amount <= applied_amount) the third.
        moved = session.scalar(
            update(WalletCharge)
            .where(
                WalletCharge.charge_id == charge_id,
                WalletCharge.reversed_amount + amount <= WalletCharge.applied_amount,
            )
            .values(reversed_amount=WalletCharge.reversed_amount + amount)
            .returning(WalletCharge.reversed_amount),
            execution_options={"synchronize_session": False},
        )
        if moved is None:
            raise ReversalExceedsCharge(
                requested=amount, reversible=reversible, charge_id=charge_id
            )
        leg = ledger.Leg(
            customer_id=customer_id,
            currency=record.currency,
            amount=amount,
            is_credit=True,
            event_type="payment_reversal",
            reason=reason,
            key=entry_key,
            reference_object_id=record.order_id,
            actor=actor,
        )
        [posted] = ledger.post(session, [leg])
        assert isinstance(posted, ledger.Posted)  # a credit always posts; duplicates raise
    session.refresh(record)
    return Reversal(view=_view(session, record), entry=posted.entry)
