"""Disputes (chargebacks) of top-ups: the disputed credit is held while the dispute is open,
taken by a ``dispute`` debit entry when it is lost, and released when it is won.

Provider-neutral: ``worker.payments.dodo`` and ``worker.payments.stripe`` read their events
and call ``apply_dispute``. What a dispute may hold and take is the disputed share of what the
payment credited (its proportion, rounded down, as for refunds), at most what earlier refunds
left of the credit; of that, what the wallet has available when it opens. The rest is the
dispute's ``shortfall``, recorded on the event's result and announced with
``payment.dispute_shortfall`` (the customer already spent it).

Exactly once, in any order: every event of a dispute first locks its payment's row
(``lock_payment``; ``NotReady`` until the payment has been applied), then reads the dispute's
row (``topup_disputes``). The opening event creates it and its hold (keyed
``dispute:{provider}:{dispute_id}`` in the system namespace); a closing event that finds no
row waits (``NotReady``: the inbox retries it) until the opening one has been applied; a
redelivered event finds the row already where it would move it.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker import ledger, notify
from worker.errors import ValidationFailed
from worker.inbox.handling import Handled, NotReady
from worker.ledger import holds
from worker.models import TopupDispute, utcnow
from worker.money import MAX_AMOUNT, minor_unit_exponent
from worker.payments.topups import actor_of, lock_payment

Action = Literal["open", "lose", "win"]
_DIGITS = re.compile(r"[0-9]+")
_DECIMAL = re.compile(r"[0-9]+\.[0-9]+")


def dispute_amount(value: Any, currency: str, field: str) -> int:
    """A dispute's amount in minor units. An integer, or a string of digits, is minor units
    (as payments' amounts are); a decimal string (``"12.34"``) is major units, converted
    exactly by the currency's minor unit (``"12.34"`` USD is 1234; ``"12.345"`` USD, which no
    whole number of cents is, is refused)."""
    if isinstance(value, int) and not isinstance(value, bool):
        amount = value
    elif isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
        amount = int(value.strip())
    elif isinstance(value, str) and _DECIMAL.fullmatch(value.strip()):
        scaled = Decimal(value.strip()).scaleb(minor_unit_exponent(currency))
        if scaled != scaled.to_integral_value():
            raise ValidationFailed(
                field, f"{value!r} is not a whole number of {currency} minor units"
            )
        amount = int(scaled)
    else:
        raise ValidationFailed(field, "expected minor units or a decimal amount")
    if not 0 < amount <= MAX_AMOUNT:
        raise ValidationFailed(field, f"must be between 1 and {MAX_AMOUNT} minor units")
    return amount


def _row(session: Session, customer_id: str, provider: str, dispute_id: str) -> TopupDispute | None:
    return session.scalars(
        select(TopupDispute)
        .where(
            TopupDispute.customer_id == customer_id,
            TopupDispute.provider == provider,
            TopupDispute.dispute_id == dispute_id,
        )
        .execution_options(populate_existing=True)
    ).one_or_none()


def _result(row: TopupDispute, **extra: Any) -> dict[str, Any]:
    return {
        "dispute_id": row.dispute_id,
        "payment_id": row.payment_id,
        "customer_id": row.customer_id,
        "currency": row.currency,
        "status": row.status,
        "share": row.share,
        "held": row.held,
        "shortfall": row.shortfall,
        "hold_id": row.hold_id,
        "entry_id": row.ledger_entry_id,
        **extra,
    }


def apply_dispute(
    session: Session,
    *,
    provider: str,
    event_type: str,
    dispute_id: str,
    payment_id: str,
    amount: int,
    currency: str,
    action: Action,
) -> Handled:
    """Apply one dispute event in the caller's transaction (see the module's docstring)."""
    topup = lock_payment(session, provider, payment_id)
    if topup.credited_amount == 0 or topup.customer_id is None or topup.currency is None:
        return Handled("ignored", {"reason": "the payment did not credit a wallet"})
    if currency != topup.payment_currency:
        raise ValidationFailed(
            "currency",
            f"dispute currency {currency} differs from the payment's {topup.payment_currency}",
        )
    row = _row(session, topup.customer_id, provider, dispute_id)
    actor = actor_of(provider)
    if action == "open":
        if row is not None:
            return Handled("processed", _result(row, duplicate=True))
        return _open(session, topup, provider, dispute_id, amount, actor)
    if row is None:
        raise NotReady(f"dispute {dispute_id} has not been opened yet")
    if row.status != "open":
        return Handled("processed", _result(row, duplicate=True))
    now = utcnow()
    if row.hold_id is not None:
        if action == "lose":
            outcome = holds.capture_hold(
                session,
                customer_id=row.customer_id,
                hold_id=row.hold_id,
                actor=actor,
                event_type="dispute",
                reason=f"{provider} dispute {dispute_id} of payment {payment_id} lost",
                now=now,
                kind="dispute",
            )
            taken = outcome.hold.captured_amount if outcome.hold else 0
            row.ledger_entry_id = outcome.hold.entry_id if outcome.hold else None
            # What a lost dispute took back counts against the credit, as a refund would.
            topup.reversed_amount = min(topup.credited_amount, topup.reversed_amount + taken)
        else:
            holds.release_hold(
                session,
                customer_id=row.customer_id,
                hold_id=row.hold_id,
                actor=actor,
                now=now,
                kind="dispute",
            )
    row.status = "lost" if action == "lose" else "won"
    row.closing_event = event_type
    row.closed_at = now
    session.flush()
    return Handled("processed", _result(row))


def _open(
    session: Session,
    topup: Any,
    provider: str,
    dispute_id: str,
    amount: int,
    actor: str,
) -> Handled:
    if topup.payment_amount > 0:
        share = topup.credited_amount * amount // topup.payment_amount
    else:
        share = topup.credited_amount
    share = max(0, min(share, topup.credited_amount - topup.reversed_amount))
    hold = None
    if share > 0:
        outcome = holds.create_hold(
            session,
            customer_id=topup.customer_id,
            currency=topup.currency,
            amount=share,
            actor=actor,
            idempotency_key=ledger.system_key("dispute", provider, dispute_id),
            reason=f"{provider} dispute {dispute_id} of payment {topup.payment_id}",
            reference_object_id=topup.payment_id,
            kind="dispute",
            # The dispute is already open at the provider: hold what is there, owe the rest.
            take_available=True,
        )
        hold = outcome.hold
    held = hold.amount if hold is not None else 0
    row = TopupDispute(
        customer_id=topup.customer_id,
        provider=provider,
        dispute_id=dispute_id,
        payment_id=topup.payment_id,
        currency=topup.currency,
        disputed_amount=amount,
        share=share,
        held=held,
        shortfall=share - held,
        status="open",
        hold_id=hold.hold_id if hold is not None else None,
    )
    session.add(row)
    session.flush()
    if row.shortfall:
        notify.enqueue_event(
            session,
            "payment.dispute_shortfall",
            {
                "customer_id": row.customer_id,
                "currency": row.currency,
                "payment_id": row.payment_id,
                "dispute_id": dispute_id,
                "disputed_share": share,
                "held": held,
                "shortfall": row.shortfall,
                "hold_id": row.hold_id,
            },
        )
    return Handled("processed", _result(row))
