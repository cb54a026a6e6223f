"""The JSON shape of a hold, shared by the HTTP API and the CLI."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from worker.ledger.schemas import _Out
from worker.models import WalletHold


class HoldOut(_Out):
    hold_id: str = Field(description="`hold_...`")
    customer_id: str
    currency: str
    kind: str = Field(description="`hold` (work in flight) or `dispute` (a disputed top-up).")
    status: str = Field(description="`active`, `captured`, `released` or `expired`.")
    amount: int = Field(description="Minor units reserved while active.")
    captured_amount: int = Field(description="Minor units debited by its capture (0 until then).")
    released_amount: int = Field(
        description="Minor units given back to the available balance (0 while active)."
    )
    reason: str | None = None
    reference_object_id: str | None = Field(
        None, description="A dispute's payment id; a hold's own reference."
    )
    idempotency_key: str | None = None
    expires_at: datetime | None = Field(
        None, description="When it stops reserving; null for a dispute (until it ends)."
    )
    created_at: datetime
    closed_at: datetime | None = Field(None, description="When it was captured or released.")
    ledger_entry_id: str | None = Field(None, description="Its capture's debit entry.")
    actor: str = Field(description="Who created it.")
    closed_by: str | None = Field(None, description="Who captured or released it (`system`).")

    @classmethod
    def of(cls, h: WalletHold) -> HoldOut:
        return cls(
            hold_id=h.hold_id,
            customer_id=h.customer_id,
            currency=h.currency,
            kind=h.kind,
            status=h.status,
            amount=h.amount,
            captured_amount=h.captured_amount,
            released_amount=0 if h.status == "active" else h.amount - h.captured_amount,
            reason=h.reason,
            reference_object_id=h.reference_object_id,
            idempotency_key=h.idempotency_key if h.key_scope == "client" else None,
            expires_at=h.expires_at,
            created_at=h.created_at,
            closed_at=h.closed_at,
            ledger_entry_id=h.entry_id,
            actor=h.actor,
            closed_by=h.closed_by,
        )


class HoldListOut(_Out):
    items: list[HoldOut]
