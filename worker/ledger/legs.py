"""A posting's parts: legs in, results out, and the one builder of ledger rows.

A leg is one balance change of one wallet: who, which currency, how much, credit or debit,
why (event type, reason, reference), its idempotency key, and what to do when a debit finds
less than it asks for. Every balance change in the system is a leg handed to
``worker.ledger.posting.post``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from functools import cached_property
from typing import Any

from worker.config import Settings
from worker.errors import ValidationFailed
from worker.ledger.keys import IdempotencyKey, fingerprint, validate_key
from worker.ledger.validation import currency_of, validate_amount, validate_event_type
from worker.models import LOT_CATEGORIES, LedgerEntry, Wallet, utcnow
from worker.notify.lowbalance import WalletState


class OnShort(StrEnum):
    """What a debit does when the wallet holds less than it asks for."""

    # Nothing is written and InsufficientBalance names the balance: what a client asked for.
    REFUSE = "refuse"
    # Debit what is there (nothing when it is 0); the result's ``shortfall`` is the rest, which
    # the caller records as owed (usage events' unbilled amount, a top-up refund's shortfall):
    # for debits paying for something that already happened.
    TAKE = "take"


@dataclass(frozen=True, slots=True)
class Leg:
    customer_id: str
    currency: str
    amount: int
    is_credit: bool
    event_type: str = "merchant_adjustment"
    reason: str | None = None
    reference_object_id: str | None = None
    key: IdempotencyKey | None = None
    on_short: OnShort = OnShort.REFUSE
    # Who posts it: an API key's id, webhook:dodo, webhook:stripe, usage, system or cli.
    actor: str = "system"
    # Credits: the lot's category (None: paid) and when it expires (None: never).
    category: str | None = None
    expires_at: datetime | None = None
    # Debits: a lot to take from before the others (a top-up's reversal takes back its own
    # lot first); for an ``expiration``, the one expired lot it takes.
    lot_id: str | None = None

    @property
    def delta(self) -> int:
        return self.amount if self.is_credit else -self.amount

    @property
    def wallet(self) -> tuple[str, str]:
        return (self.customer_id, self.currency)

    def params(self) -> dict[str, Any]:
        """The fingerprint's inputs: what a retry with the same key must repeat."""
        params: dict[str, Any] = {
            "currency": self.currency,
            "amount": self.amount,
            "is_credit": self.is_credit,
            "event_type": self.event_type,
            "reason": self.reason,
            "reference_object_id": self.reference_object_id,
        }
        if self.on_short is not OnShort.REFUSE:
            params["on_short"] = self.on_short.value
        if self.category is not None:
            params["category"] = self.category
        if self.expires_at is not None:
            params["expires_at"] = self.expires_at.isoformat()
        return params

    def fingerprint(self) -> str:
        return fingerprint(**self.params())


def prepare(settings: Settings, leg: Leg) -> Leg:
    """``leg`` checked and normalised (``usd`` is ``USD``), or a typed error naming the field.

    The one validation every path shares, so the one-statement path and the transaction
    accept and refuse exactly the same legs.
    """
    validate_amount(leg.amount)
    currency = currency_of(settings, leg.currency)
    validate_event_type(leg.event_type)
    validate_key(leg.key)
    if not isinstance(leg.is_credit, bool):
        raise ValidationFailed("entry_type", "must be credit or debit")
    if leg.is_credit and leg.on_short is not OnShort.REFUSE:
        raise ValidationFailed("on_short", "applies to debits only")
    if leg.category is not None and (not leg.is_credit or leg.category not in LOT_CATEGORIES):
        raise ValidationFailed(
            "category",
            f"must be one of {', '.join(LOT_CATEGORIES)}" if leg.is_credit else "credits only",
        )
    if leg.expires_at is not None:
        if not leg.is_credit:
            raise ValidationFailed("expires_at", "credits only")
        if leg.expires_at.tzinfo is None:
            raise ValidationFailed("expires_at", "needs a time zone (RFC 3339)")
        expires_at = leg.expires_at.astimezone(UTC)
        if expires_at <= utcnow():
            raise ValidationFailed("expires_at", "must be in the future")
        # The same instant in any offset is the same fingerprint.
        if leg.expires_at.tzinfo is not UTC:
            leg = replace(leg, expires_at=expires_at)
    return leg if currency == leg.currency else replace(leg, currency=currency)


def entry_row(
    leg: Leg, *, entry_id: str, business_id: str, before: int, amount: int, now: datetime
) -> dict[str, Any]:
    """The ledger row for ``leg`` taking ``amount`` (a TAKE debit may take less than it asked)
    from a wallet at ``before``: the only place entry rows are built (its keys are
    ``pg.ENTRY_COLUMNS``)."""
    return {
        "id": entry_id,
        "business_id": business_id,
        "customer_id": leg.customer_id,
        "currency": leg.currency,
        "amount": amount,
        "is_credit": leg.is_credit,
        "before_balance": before,
        "after_balance": before + amount if leg.is_credit else before - amount,
        "event_type": leg.event_type,
        "reason": leg.reason,
        "reference_object_id": leg.reference_object_id,
        "idempotency_key": leg.key.value if leg.key else None,
        "key_scope": leg.key.scope if leg.key else "client",
        "fingerprint": leg.fingerprint(),
        "created_at": now,
        "actor": leg.actor,
    }


@dataclass(frozen=True)
class Posted:
    """A leg as posted: its entry, the wallet after it, and what it could not take."""

    entry: LedgerEntry
    # The wallet's low-balance inputs as the posting left them.
    state: WalletState | None = None
    shortfall: int = 0  # a TAKE debit's requested amount minus what it took
    # Builds the wallet object on first use: a batch of a thousand legs builds none.
    make_wallet: Callable[[], Wallet] | None = field(default=None, repr=False, compare=False)

    @cached_property
    def wallet(self) -> Wallet:
        assert self.make_wallet is not None
        return self.make_wallet()


@dataclass(frozen=True)
class Replayed:
    """A leg whose key an earlier entry already holds with the same parameters (batches
    posted with ``duplicates="skip"`` report it instead of raising)."""

    entry: LedgerEntry
