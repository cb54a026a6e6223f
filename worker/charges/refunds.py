"""Refunds to wallet: support refunds a purchase into the wallet instead of to the card.

What is refunded of one payment never exceeds the payment (``known_payments``), under any
concurrency: every refund of a payment first locks that payment's ``refunded_payments`` row,
then computes what is left, then raises the row's total in the same transaction as its credit.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from worker import ledger
from worker.charges.known_payments import KnownPayment, Whose, find_payment
from worker.charges.views import (
    Refund,
    _identifier,
    _reason,
)
from worker.errors import (
    DuplicateEntry,
    IdempotencyKeyReused,
    RefundCapExceeded,
    RefundExceedsPayment,
    UnknownPayment,
    ValidationFailed,
)
from worker.infra.db import settings_of
from worker.models import RefundedPayment, utcnow


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
    A retry of a refund already credited is answered as a replay, whatever the bounds say now.
    Otherwise: ``UnknownPayment`` for a payment this customer is not known to have made
    (unless ALLOW_UNKNOWN_PAYMENT_REFUNDS), ``RefundExceedsPayment`` past what is left of it,
    ``RefundCapExceeded`` above WALLET_REFUND_MAX (or MAX_UNKNOWN_PAYMENT_REFUND).
    """
    amount = ledger.validate_amount(amount)
    currency = ledger.validate_currency(session, currency)
    payment_id = _identifier(payment_id, "payment_id")
    refund_id = _identifier(refund_id, "refund_id", required=False)
    reason = _reason(reason)
    customer = ledger.get_customer(session, customer_id)
    key = (
        ledger.system_key("wallet_refund", refund_id)
        if refund_id
        else ledger.system_key("wallet_refund", payment_id, amount)
    )

    def replay() -> Refund:
        return _post(
            session, customer_id, amount, currency, payment_id, refund_id, reason, key, actor
        )

    if ledger.find_entry(session, customer_id, key) is not None:
        return replay()  # or IdempotencyKeyReused: the key was used with other parameters

    settings = settings_of(session)
    cap = settings.wallet_refund_max
    if cap is not None and amount > cap:  # before any look-up: a fat finger costs nothing
        raise RefundCapExceeded(requested=amount, cap=cap, currency=currency)
    known = find_payment(session, customer, payment_id)
    if known.whose is Whose.OTHERS or (
        known.whose is Whose.UNSEEN and not settings.allow_unknown_payment_refunds
    ):
        raise UnknownPayment(payment_id, customer_id)
    if known.currency is not None and known.currency != currency:
        raise ValidationFailed("currency", f"payment {payment_id} was in {known.currency}")
    unseen_cap = settings.max_unknown_payment_refund
    if known.whose is Whose.UNSEEN and unseen_cap is not None and amount > unseen_cap:
        raise RefundCapExceeded(
            requested=amount,
            cap=unseen_cap,
            currency=currency,
            setting="MAX_UNKNOWN_PAYMENT_REFUND",
        )

    totals = _lock_totals(session, customer_id, payment_id, known, currency)
    # Under the lock: a concurrent refund with this key may have committed while we waited.
    if ledger.find_entry(session, customer_id, key) is not None:
        return replay()
    if totals.currency != currency:
        raise ValidationFailed("currency", f"payment {payment_id} is refunded in {totals.currency}")
    if totals.payment_amount is not None:
        remaining = totals.payment_amount - totals.refunded_amount
        if amount > remaining:
            raise RefundExceedsPayment(
                requested=amount, remaining=remaining, payment_id=payment_id, currency=currency
            )

    def raise_total() -> None:
        # The conditional UPDATE is the second guard behind the row lock, the CHECK the third.
        moved = session.scalar(
            update(RefundedPayment)
            .where(
                RefundedPayment.customer_id == customer_id,
                RefundedPayment.payment_id == payment_id,
                (RefundedPayment.payment_amount.is_(None))
                | (RefundedPayment.refunded_amount + amount <= RefundedPayment.payment_amount),
            )
            .values(refunded_amount=RefundedPayment.refunded_amount + amount, updated_at=utcnow())
            .returning(RefundedPayment.refunded_amount),
            execution_options={"synchronize_session": False},
        )
        if moved is None:  # pragma: no cover - the row lock makes this unreachable
            raise RefundExceedsPayment(
                requested=amount, remaining=0, payment_id=payment_id, currency=currency
            )

    return _post(
        session,
        customer_id,
        amount,
        currency,
        payment_id,
        refund_id,
        reason,
        key,
        actor,
        raise_total,
    )


def _lock_totals(
    session: Session, customer_id: str, payment_id: str, known: KnownPayment, currency: str
) -> RefundedPayment:
    """The payment's totals row, created on its first refund, locked until commit.

    ``INSERT ... ON CONFLICT DO NOTHING`` then ``SELECT ... FOR UPDATE``: a concurrent first
    refund waits on the unique index until the other commits, then locks the row it made.
    SQLite's write lock (BEGIN IMMEDIATE) already serialises every writer.
    """
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    now = utcnow()
    session.execute(
        insert(RefundedPayment)
        .values(
            customer_id=customer_id,
            payment_id=payment_id,
            source=known.source or "unknown",
            currency=known.currency or currency,
            payment_amount=known.amount,
            refunded_amount=0,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=["customer_id", "payment_id"])
    )
    totals = session.scalar(
        select(RefundedPayment)
        .where(RefundedPayment.customer_id == customer_id, RefundedPayment.payment_id == payment_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    assert totals is not None
    if totals.payment_amount is None and known.amount is not None:
        # Refunded before the payment was known (refunds made before migration 0012, or under
        # ALLOW_UNKNOWN_PAYMENT_REFUNDS): from now on it is bounded. What was refunded already
        # counts; should it exceed the payment, nothing more is left.
        totals.source = known.source or "unknown"
        totals.payment_amount = max(known.amount, totals.refunded_amount)
        session.flush()
    return totals


def _post(
    session: Session,
    customer_id: str,
    amount: int,
    currency: str,
    payment_id: str,
    refund_id: str | None,
    reason: str | None,
    key: ledger.IdempotencyKey,
    actor: str,
    before: Callable[[], None] | None = None,
) -> Refund:
    """Post the refund's credit, after ``before`` (the payment's total) in one savepoint: a
    credit refused as a duplicate or a reused key undoes the total with it."""
    try:
        with session.begin_nested():
            if before is not None:
                before()
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
    except DuplicateEntry as duplicate:
        wallet = ledger.get_wallet(session, customer_id, currency)
        return Refund(duplicate.entry, wallet, refund_id, replayed=True)
    except IdempotencyKeyReused as reused:
        # Name the caller's fields, not the ledger's.
        names = {"reference_object_id": "payment_id"}
        fields = [names.get(f, f) for f in reused.fields]
        raise IdempotencyKeyReused(refund_id or key.value, fields, reused.original) from None
    assert posted is not None
    return Refund(posted.entry, posted.wallet, refund_id)
