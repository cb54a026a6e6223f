"""Outbound notifications: endpoints, the transactional outbox and its delivery, the
low-balance state of wallets, and what every commit brings with it (``commit_hooks``).

``lowbalance``, ``commit_hooks`` and ``publish`` are submodules, imported by name.
"""

from worker.notify.delivery import (
    JITTER,
    LEASE_SECONDS,
    TIMEOUT_SECONDS,
    Outcome,
    deliver,
    dispatch_due,
    due_message_ids,
    retry_delay,
    sign_headers,
)
from worker.notify.endpoints import (
    EMAIL_EVENT_TYPES,
    EVENT_TYPES,
    add_endpoint,
    endpoint_secret,
    is_subscribed,
    list_endpoints,
    new_secret,
    parse_event_types,
    remove_endpoint,
    seal_secrets,
    wants,
)
from worker.notify.outbox import (
    ENDPOINTS_KEY,
    SESSION_KEY,
    attempts_of,
    enqueue_event,
    envelope,
    list_messages,
    resend,
)

__all__ = [
    "EMAIL_EVENT_TYPES",
    "ENDPOINTS_KEY",
    "EVENT_TYPES",
    "JITTER",
    "LEASE_SECONDS",
    "SESSION_KEY",
    "TIMEOUT_SECONDS",
    "Outcome",
    "add_endpoint",
    "attempts_of",
    "deliver",
    "dispatch_due",
    "due_message_ids",
    "endpoint_secret",
    "enqueue_event",
    "envelope",
    "is_subscribed",
    "list_endpoints",
    "list_messages",
    "new_secret",
    "parse_event_types",
    "remove_endpoint",
    "resend",
    "retry_delay",
    "seal_secrets",
    "sign_headers",
    "wants",
]
