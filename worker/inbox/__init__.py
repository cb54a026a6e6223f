"""The durable inbox: provider webhooks are stored first, then processed exactly once.

Lifecycle of a row: ``pending`` (stored, not yet applied) -> ``processed`` (its ledger change is
committed) or ``ignored`` (nothing to do: an unknown type, a payment that is not a top-up) or
``failed`` (a permanent error, kept with its text; ``events replay`` re-runs it). A row stays
``pending`` while it waits for something (a refund whose payment has not arrived yet), with
the reason in ``error``; the sweeper re-enqueues pending rows, so nothing is lost when an
enqueue or a worker is. Fresh events are applied in batches (``process_pending``); waiting
ones, replays and swept ones one at a time (``process_event``).

``store`` receives, ``process`` claims and applies, ``operate`` sweeps, lists and replays;
``handlers`` is the map event type -> handler, ``handling`` what a handler returns.
"""

from worker.inbox.handlers import HANDLERS, PREFETCHERS
from worker.inbox.handling import (
    PROVIDERS,
    STATUSES,
    EventNotFound,
    EventNotReplayable,
    Handled,
    Handler,
    NotReady,
    Prefetcher,
)
from worker.inbox.operate import get_event, list_events, reset_for_replay, stale_pending_ids
from worker.inbox.process import Batch, Outcome, process_event, process_pending
from worker.inbox.store import record_event, store_event

__all__ = [
    "HANDLERS",
    "PREFETCHERS",
    "PROVIDERS",
    "STATUSES",
    "Batch",
    "EventNotFound",
    "EventNotReplayable",
    "Handled",
    "Handler",
    "NotReady",
    "Outcome",
    "Prefetcher",
    "get_event",
    "list_events",
    "process_event",
    "process_pending",
    "record_event",
    "reset_for_replay",
    "stale_pending_ids",
    "store_event",
]
