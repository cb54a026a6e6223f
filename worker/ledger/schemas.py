"""The JSON shapes of customers, wallets and entries, shared by the HTTP API and the CLI.

Field names follow Dodo Payments' customer-wallet API exactly, so its SDKs parse them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, Field, field_serializer

from worker.models import Customer, LedgerEntry, Wallet

# Wallet.pending_usage_scaled counts 10**-12 minor units.
USAGE_SCALE = 10**12


def iso(value: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``, as Dodo's API writes timestamps."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


class _Out(BaseModel):
    # No return annotation on purpose: pydantic documents a serializer's return type in the
    # serialization schema (/openapi.json), and ``-> Any`` erased every response field's type.
    @field_serializer("*", when_used="json")
    def _dates(self, value: Any):  # type: ignore[no-untyped-def]
        return iso(value) if isinstance(value, datetime) else value


class CustomerOut(_Out):
    customer_id: str
    business_id: str
    email: str
    name: str
    phone_number: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    low_balance_thresholds: dict[str, int] | None = None
    created_at: datetime

    @classmethod
    def of(cls, c: Customer) -> CustomerOut:
        return cls(
            customer_id=c.customer_id,
            business_id=c.business_id,
            email=c.email,
            name=c.name,
            phone_number=c.phone_number,
            metadata=c.metadata_ or {},
            low_balance_thresholds=c.low_balance_thresholds,
            created_at=c.created_at,
        )


class WalletOut(_Out):
    balance: int = Field(description="Balance in minor units (cents for USD, paise for INR).")
    currency: str
    customer_id: str
    created_at: datetime
    updated_at: datetime
    pending_usage: str = Field(
        "0",
        description="Usage cost accrued but not yet debited, a decimal string in minor units "
        "(always below one minor unit).",
    )
    held_balance: int = Field(
        0, description="Minor units reserved by active holds and open disputes (not debited)."
    )
    available_balance: int = Field(
        0,
        description="What debits may spend: balance - held_balance (0 when the holds exceed "
        "the balance).",
    )

    @classmethod
    def of(cls, w: Wallet) -> WalletOut:
        pending = Decimal(w.pending_usage_scaled or 0) / USAGE_SCALE
        held = w.held or 0
        return cls(
            held_balance=held,
            available_balance=max(w.balance - held, 0),
            balance=w.balance,
            currency=w.currency,
            customer_id=w.customer_id,
            created_at=w.created_at,
            updated_at=w.updated_at,
            pending_usage=format(pending.normalize(), "f") if pending else "0",
        )


class WalletSummaryOut(WalletOut):
    """A wallet as ``GET /customers/{id}/wallets`` lists it: with what expires soon."""

    expiring_soon: int = Field(
        0,
        description="Minor units of live credit expiring within CREDIT_EXPIRY_NOTICE_DAYS "
        "(default 7 days).",
    )
    next_expiry_at: datetime | None = Field(
        None, description="When the soonest-expiring live credit lot expires; null if none does."
    )

    @classmethod
    def with_expiry(
        cls, w: Wallet, expiring_soon: int, next_expiry_at: datetime | None
    ) -> WalletSummaryOut:
        return cls(
            **WalletOut.of(w).model_dump(),
            expiring_soon=expiring_soon,
            next_expiry_at=next_expiry_at,
        )


class WalletListOut(_Out):
    items: list[WalletSummaryOut]
    total_balance_usd: int = Field(
        description="All balances converted to USD cents at FX_RATES_TO_USD, rounded down."
    )


class LedgerEntryOut(_Out):
    id: str
    amount: int
    after_balance: int
    before_balance: int
    business_id: str
    created_at: datetime
    currency: str
    customer_id: str
    event_type: str
    is_credit: bool
    reason: str | None = None
    reference_object_id: str | None = None
    idempotency_key: str | None = None
    # Not in Dodo's shape (its SDK keeps it in model_extra): who posted the entry.
    actor: str = Field(
        "unknown",
        description="Who posted it: an API key's id, `bootstrap`, `webhook:dodo`, "
        "`webhook:stripe`, `usage`, `system` or `cli` (`unknown` before actors were recorded).",
    )

    @classmethod
    def of(cls, e: LedgerEntry) -> LedgerEntryOut:
        return cls(
            id=e.id,
            amount=e.amount,
            after_balance=e.after_balance,
            before_balance=e.before_balance,
            business_id=e.business_id,
            created_at=e.created_at,
            currency=e.currency,
            customer_id=e.customer_id,
            event_type=e.event_type,
            is_credit=e.is_credit,
            reason=e.reason,
            reference_object_id=e.reference_object_id,
            idempotency_key=e.idempotency_key,
            actor=e.actor or "unknown",
        )


class LedgerEntryListOut(_Out):
    items: list[LedgerEntryOut]


class CustomerListOut(_Out):
    items: list[CustomerOut]


def dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json")
