"""Usage events: ingest, pricing, exact accrual, batched exactly-once debits, settlement.

Lifecycle of an event (``usage_events.status``):

- ``pending``   stored and priced (``currency``, ``cost_scaled``), not yet billed;
- ``processed`` its cost is in the wallet: debited, or accrued in ``pending_usage_scaled``;
- ``unbilled``  billed while the wallet could not pay it all: ``unbilled_amount`` whole minor
                units are owed, and ``settle`` debits them oldest first after a top-up;
- ``unpriced``  no price for its ``event_name`` (kept, never billed);
- ``invalid``   its quantity cannot be priced (``error`` says why; kept, never billed).

Accrual rule, per wallet: ``pending_usage_scaled + sum(cost_scaled)`` of a batch is split into
whole minor units (debited as ONE ``usage`` ledger entry) and a remainder below one minor unit
(kept in ``pending_usage_scaled``). Nothing is rounded, so for any set of events and any
batching: debited + unbilled + remainder == the exact sum of their costs.

``ingest`` stores and prices events; ``billing`` debits them in batches; ``settlement`` debits
what was left unbilled once the wallet is topped up; ``queries`` reads them back; ``pricing``
holds the price table and ``schemas`` the wire shapes.
"""

from worker.usage.billing import BATCH_SIZE, BatchResult, bill_batch
from worker.usage.ingest import (
    MAX_AGE,
    MAX_AHEAD,
    MAX_EVENTS_PER_REQUEST,
    Conflict,
    EventsRejected,
    Ingested,
    NewEvent,
    ingest,
)
from worker.usage.queries import STATUSES, business_id, count_pending, get_event, list_events
from worker.usage.settlement import Settled, settle

__all__ = [
    "BATCH_SIZE",
    "MAX_AGE",
    "MAX_AHEAD",
    "MAX_EVENTS_PER_REQUEST",
    "STATUSES",
    "BatchResult",
    "Conflict",
    "EventsRejected",
    "Ingested",
    "NewEvent",
    "Settled",
    "bill_batch",
    "business_id",
    "count_pending",
    "get_event",
    "ingest",
    "list_events",
    "settle",
]
