"""Wallet-first checkout: how much of an order the wallet covers, taken in one step.

Every balance change goes through ``worker.ledger``; these functions never commit.
"""

from __future__ import annotations

from sqlalchemy import and_, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from worker import ledger
from worker.charges.views import (
    ChargeView,
    _identifier,
    _reason,
    _reversal_prefix,
)
from worker.errors import (
    ChargeNotFound,
    IdempotencyKeyReused,
    ValidationFailed,
)
from worker.models import LedgerEntry, WalletCharge, new_id, utcnow


def charge(
    session: Session,
    customer_id: str,
    amount: int,
    currency: str,
    order_id: str,
    idempotency_key: str | None = None,
    reason: str | None = None,
    allow_partial: bool = True,
    actor: str = "system",
) -> ChargeView:
    """Take ``min(balance, amount)`` from the wallet for ``order_id`` (all or nothing when
    ``allow_partial`` is false: ``InsufficientBalance``, nothing recorded, key unused).
    ``actor`` (an API key's id, ``cli``) is recorded on the charge and its entry.

    An empty wallet still records the charge, with ``applied_amount`` 0 and no ledger entry,
    so a retry answers the same and a later top-up cannot change what this order was told.
    """
    amount = ledger.validate_amount(amount)
    currency = ledger.validate_currency(session, currency)
    order_id = _identifier(order_id, "order_id")
    # The caller's key, or the system's default for the order: two namespaces, so a key a
    # client chose can never stand in for another order's default (see ledger.keys).
    default = ledger.system_key("charge", order_id)
    key = ledger.client_key(_identifier(idempotency_key, "idempotency_key", required=False))
    if key is None or key.value == default.value:  # a client naming the default means it
        key = default
    reason = _reason(reason)
    if not isinstance(allow_partial, bool):
        raise ValidationFailed("allow_partial", "must be a boolean")
    asked = {
        "amount": amount,
        "currency": currency,
        "order_id": order_id,
        "reason": reason,
        "allow_partial": allow_partial,
    }

    existing = _find_charge(session, customer_id, key)
    if existing is not None:
        return _replay(session, existing, asked)

    record = WalletCharge(
        charge_id=new_id("wch"),
        customer_id=customer_id,
        currency=currency,
        order_id=order_id,
        idempotency_key=key.value,
        key_scope=key.scope,
        requested_amount=amount,
        applied_amount=0,
        reversed_amount=0,
        allow_partial=allow_partial,
        reason=reason,
        created_at=utcnow(),
        actor=actor,
    )
    try:
        # The charge row goes in first: a concurrent request with the same key blocks on the
        # unique index until we commit, then fails here and answers with our charge, so only
        # one of them ever reaches the wallet. The savepoint also undoes the row when an
        # all-or-nothing debit is refused, leaving the key unused.
        with session.begin_nested():
            session.add(record)
            session.flush()
            posted = _debit(session, record, amount, allow_partial)
    except IntegrityError:
        winner = _find_charge(session, customer_id, key)
        if winner is None:
            # An unknown customer fails the foreign key: checked only now, to save a query
            # on every charge.
            ledger.get_customer(session, customer_id)
            raise
        return _replay(session, winner, asked)
    if posted is None:
        return ChargeView(record, ledger.get_wallet(session, customer_id, currency), [])
    return ChargeView(charge=record, wallet=posted.wallet, entries=[posted.entry])


def _debit(
    session: Session, record: WalletCharge, amount: int, allow_partial: bool
) -> ledger.Posted | None:
    leg = ledger.Leg(
        customer_id=record.customer_id,
        currency=record.currency,
        amount=amount,
        is_credit=False,
        event_type="payment",
        reason=record.reason,
        # No ledger key: the charge row (unique per customer and key, inserted in this same
        # savepoint with a fresh charge_id) already makes this the only debit of the charge,
        # and a key would cost two look-ups per charge. ledger_entry_id links the two.
        key=None,
        reference_object_id=record.order_id,
        # A partial charge takes what the wallet holds under the wallet's row lock, so
        # concurrent charges on one wallet queue there and each takes what the others left.
        on_short=ledger.OnShort.TAKE if allow_partial else ledger.OnShort.REFUSE,
        actor=record.actor,
    )
    [posted] = ledger.post(session, [leg])
    if not isinstance(posted, ledger.Posted):
        return None
    record.applied_amount = posted.entry.amount
    record.ledger_entry_id = posted.entry.id
    session.flush()
    return posted


def _replay(session: Session, original: WalletCharge, asked: dict[str, object]) -> ChargeView:
    recorded = {
        "amount": original.requested_amount,
        "currency": original.currency,
        "order_id": original.order_id,
        "reason": original.reason,
        "allow_partial": original.allow_partial,
    }
    differing = [name for name, value in asked.items() if recorded[name] != value]
    if differing:
        raise IdempotencyKeyReused(original.idempotency_key, differing, original)
    view = get_charge(session, original.customer_id, original.charge_id)
    return ChargeView(view.charge, view.wallet, view.entries, replayed=True)


def _find_charge(
    session: Session, customer_id: str, key: ledger.IdempotencyKey
) -> WalletCharge | None:
    return session.scalar(
        select(WalletCharge)
        .where(
            WalletCharge.customer_id == customer_id,
            WalletCharge.key_scope == key.scope,
            WalletCharge.idempotency_key == key.value,
        )
        .execution_options(populate_existing=True)
    )


def get_charge(session: Session, customer_id: str, charge_id: str) -> ChargeView:
    """The charge, the wallet now, and its entries (the debit, then reversals) oldest first."""
    ledger.get_customer(session, customer_id)
    record = session.scalar(
        select(WalletCharge)
        .where(WalletCharge.customer_id == customer_id, WalletCharge.charge_id == charge_id)
        .execution_options(populate_existing=True)
    )
    if record is None:
        raise ChargeNotFound(charge_id)
    return _view(session, record)


def _view(session: Session, record: WalletCharge) -> ChargeView:
    entries = session.scalars(
        select(LedgerEntry)
        .where(
            LedgerEntry.customer_id == record.customer_id,
            LedgerEntry.reference_object_id == record.order_id,
            or_(
                LedgerEntry.id == record.ledger_entry_id,
                and_(
                    LedgerEntry.key_scope == ledger.SYSTEM,
                    LedgerEntry.idempotency_key.startswith(
                        _reversal_prefix(record.charge_id), autoescape=True
                    ),
                ),
            ),
        )
        .order_by(LedgerEntry.seq)
    )
    wallet = ledger.get_wallet(session, record.customer_id, record.currency)
    return ChargeView(charge=record, wallet=wallet, entries=list(entries))
