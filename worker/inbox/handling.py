"""What an inbox handler returns and raises; see ``worker.inbox.handlers`` for the map."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from worker.errors import BillingError, NotFound
from worker.models import InboxEvent

STATUSES = ("pending", "processed", "failed", "ignored")
PROVIDERS = ("dodo", "stripe")


@dataclass
class Handled:
    """What a handler did: ``processed`` with a result, or ``ignored`` with the reason."""

    status: str
    result: dict[str, Any] = field(default_factory=dict)


class NotReady(Exception):
    """The event depends on one not applied yet (a refund before its payment): retry later."""


class EventNotFound(NotFound):
    code = "EVENT_NOT_FOUND"

    def __init__(self, event_id: int) -> None:
        super().__init__(f"Inbox event {event_id} not found", event_id=event_id)


class EventNotReplayable(BillingError):
    code = "EVENT_NOT_REPLAYABLE"


Handler = Callable[[Session, dict[str, Any]], Handled]


# Batch preparation (see ``worker.inbox.handlers.PREFETCHERS``).
Prefetcher = Callable[[Session, list[InboxEvent]], None]


# An event's lane candidates from its payload, in the order its handler looks the customer up:
# "customer:{id}", "email:{normalized}", "payment:{provider}:{payment_id}" (see
# ``worker.inbox.lanes``, which takes the first naming a known customer).
Laner = Callable[[dict[str, Any]], list[str]]
