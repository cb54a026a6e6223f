"""What charges, reversals and refunds answer, and how client identifiers are checked."""

from __future__ import annotations

from dataclasses import dataclass

from worker.errors import (
    ValidationFailed,
)
from worker.models import LedgerEntry, Wallet, WalletCharge

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


def _reversal_prefix(charge_id: str) -> str:
    return f"reversal:{charge_id}:"
