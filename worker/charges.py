"""Wallet-first checkout and refunds to wallet credit.

A checkout asks how much of an order the wallet covers and takes it in one step
(:func:`charge`); the merchant charges the card for the rest and, if that fails or the order
is cancelled, gives the wallet part back (:func:`reverse`). Support can refund a purchase into
the wallet instead of to the card (:func:`refund_to_wallet`).

Every balance change goes through ``worker.ledger``; these functions never commit.

Idempotency, per customer:

- a charge is identified by its ``idempotency_key`` (default ``charge:{order_id}``): a retry
  with the same key and parameters returns the same charge and never debits twice, even when
  the retries race; the same key with different parameters is ``IdempotencyKeyReused``.
- reversing "the rest" (no amount) is naturally idempotent: once nothing is left it is a
  no-op. A reversal of an explicit amount is idempotent only with an ``idempotency_key``;
  without one, each call reverses again. Either way the total reversed never exceeds what was
  applied (the charge row is locked, and a CHECK constraint stands behind it).
- a refund to wallet is credited once per ``refund_id`` (or per payment id + amount when no
  refund id is given).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from worker import ledger
from worker.db import settings_of
from worker.errors import (
    ChargeNotFound,
    DuplicateEntry,
    IdempotencyKeyReused,
    RefundCapExceeded,
    ReversalExceedsCharge,
    ValidationFailed,
)
from worker.models import LedgerEntry, Wallet, WalletCharge, new_id, utcnow

# Client-chosen identifiers are embedded in ledger idempotency keys (at most 255 characters).
MAX_ID_LENGTH = 200
MAX_REASON_LENGTH = 1000


@dataclass(frozen=True)
class ChargeView:
    """A charge with the wallet as it stands now and the ledger entries behind it."""

    charge: WalletCharge
    wallet: Wallet
    entries: list[LedgerEntry]
    # True when an earlier request with the same key created the charge (nothing new happened).
    replayed: bool = False

    @property
    def remaining_amount(self) -> int:
        """The part of the order the wallet did not cover: charge the card for this."""
        return self.charge.requested_amount - self.charge.applied_amount

    @property
    def reversible_amount(self) -> int:
        """What is left of the charge to give back."""
        return self.charge.applied_amount - self.charge.reversed_amount


@dataclass(frozen=True)
class Reversal:
    view: ChargeView
    # The credit this request made; None when nothing was left or the request was a replay.
    entry: LedgerEntry | None
    replayed: bool = False


@dataclass(frozen=True)
class Refund:
    entry: LedgerEntry
    wallet: Wallet
    refund_id: str | None
    replayed: bool = False


# -- validation ----------------------------------------------------------------------------


def _identifier(value: object, field: str, *, required: bool = True) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValidationFailed(field, "must be a non-empty string")
    if len(value) > MAX_ID_LENGTH:
        raise ValidationFailed(field, f"must be at most {MAX_ID_LENGTH} characters")
    return value


def _reason(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationFailed("reason", "must be a string")
    if len(value) > MAX_REASON_LENGTH:
        raise ValidationFailed("reason", f"must be at most {MAX_REASON_LENGTH} characters")
    return value


# -- charges -------------------------------------------------------------------------------


def charge(
    session: Session,
    customer_id: str,
    amount: int,
    currency: str,
    order_id: str,
    idempotency_key: str | None = None,
    reason: str | None = None,
    allow_partial: bool = True,
) -> ChargeView:
    """Take ``min(balance, amount)`` from the wallet for ``order_id`` (all or nothing when
    ``allow_partial`` is false: ``InsufficientBalance``, nothing recorded, key unused).

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
    posted = ledger.post_entry(
        session,
        customer_id=record.customer_id,
        currency=record.currency,
        amount=amount,
        is_credit=False,
        event_type="payment",
        reason=record.reason,
        # No ledger key: the charge row (unique per customer and key, inserted in this same
        # savepoint with a fresh charge_id) already makes this the only debit of the charge,
        # and a key would cost two look-ups per charge. ledger_entry_id links the two.
        idempotency_key=None,
        reference_object_id=record.order_id,
        # A partial charge takes what the wallet holds under the wallet's row lock, so
        # concurrent charges on one wallet queue there and each takes what the others left.
        on_short=ledger.OnShort.TAKE if allow_partial else ledger.OnShort.REFUSE,
    )
    if posted is None:
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


# -- reversals -----------------------------------------------------------------------------


def _reversal_prefix(charge_id: str) -> str:
    return f"reversal:{charge_id}:"


def reverse(
    session: Session,
    customer_id: str,
    charge_id: str,
    amount: int | None = None,
    reason: str | None = None,
    idempotency_key: str | None = None,
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
        posted = ledger.post_entry(
            session,
            customer_id=customer_id,
            currency=record.currency,
            amount=amount,
            is_credit=True,
            event_type="payment_reversal",
            reason=reason,
            idempotency_key=entry_key,
            reference_object_id=record.order_id,
        )
    session.refresh(record)
    return Reversal(view=_view(session, record), entry=posted.entry)


# -- refunds to wallet ---------------------------------------------------------------------


def refund_to_wallet(
    session: Session,
    customer_id: str,
    amount: int,
    currency: str,
    payment_id: str,
    refund_id: str | None = None,
    reason: str | None = None,
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
        posted = ledger.post_entry(
            session,
            customer_id=customer_id,
            currency=currency,
            amount=amount,
            is_credit=True,
            event_type="refund",
            reason=reason,
            idempotency_key=key,
            reference_object_id=payment_id,
        )
    except DuplicateEntry as duplicate:
        wallet = ledger.get_wallet(session, customer_id, currency)
        return Refund(duplicate.entry, wallet, refund_id, replayed=True)
    except IdempotencyKeyReused as reused:
        # Name the caller's fields, not the ledger's.
        names = {"reference_object_id": "payment_id"}
        fields = [names.get(f, f) for f in reused.fields]
        raise IdempotencyKeyReused(refund_id or key.value, fields, reused.original) from None
    return Refund(posted.entry, posted.wallet, refund_id)
