"""The JSON shape of a usage event, shared by ``GET /events`` and ``billing-worker usage list``.

Dodo's ``Event`` fields first (so its SDK's ``usage_events.list`` parses the items), then what
billing adds: ``status``, the exact ``cost`` and what is still ``unbilled``.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import Field

from worker.ledger.schemas import USAGE_SCALE, _Out
from worker.models import UsageEvent
from worker.usage.ingest import Ingested


def scaled_to_str(scaled: int) -> str:
    """10**-12 minor units as an exact decimal string of minor units ("0.0003", "12")."""
    value = Decimal(scaled) / USAGE_SCALE
    return format(value.normalize(), "f") if value else "0"


class UsageEventOut(_Out):
    business_id: str
    customer_id: str
    event_id: str
    event_name: str
    timestamp: datetime
    metadata: dict[str, Any] | None = None
    status: str = Field(description="pending, processed, unbilled, unpriced or invalid.")
    currency: str | None = None
    cost: str | None = Field(
        None, description="Exact cost, a decimal string in minor units; null when not priced."
    )
    unbilled_amount: int = Field(0, description="Whole minor units still owed (unbilled).")
    ledger_entry_id: str | None = None
    error: str | None = None
    received_at: datetime
    processed_at: datetime | None = None

    @classmethod
    def of(cls, e: UsageEvent, business_id: str) -> UsageEventOut:
        return cls(
            business_id=business_id,
            customer_id=e.customer_id,
            event_id=e.event_id,
            event_name=e.event_name,
            timestamp=e.timestamp,
            metadata=e.metadata_,
            status=e.status,
            currency=e.currency,
            cost=None if e.cost_scaled is None else scaled_to_str(e.cost_scaled),
            unbilled_amount=e.unbilled_amount,
            ledger_entry_id=e.ledger_entry_id,
            error=e.error,
            received_at=e.received_at,
            processed_at=e.processed_at,
        )


class UsageEventListOut(_Out):
    items: list[UsageEventOut]


class ConflictOut(_Out):
    index: int = Field(description="The event's position in the request.")
    event_id: str
    reason: str


class IngestOut(_Out):
    ingested_count: int = Field(description="Events newly stored (a seen event_id is ignored).")
    conflicts: list[ConflictOut] = Field(
        default_factory=list,
        description="Events not stored because their event_id is another customer's event.",
    )

    @classmethod
    def of(cls, ingested: Ingested) -> IngestOut:
        return cls(
            ingested_count=ingested.count,
            conflicts=[
                ConflictOut(index=c.index, event_id=c.event_id, reason=c.reason)
                for c in ingested.conflicts
            ],
        )
