"""Prometheus metrics shared by the web app, the Celery worker and the core.

Counters live here so any module can increment them without importing ``webhooks`` or
``tasks``. Under gunicorn, set PROMETHEUS_MULTIPROC_DIR (an empty directory) so every worker
process writes its samples there and ``GET /metrics`` aggregates them.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

HTTP_REQUESTS = Counter(
    "billing_http_requests",
    "HTTP requests served, by route template, method and status code.",
    ["route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "billing_http_request_duration_seconds",
    "HTTP request latency by route template.",
    ["route"],
)
# Provider webhooks (Dodo, Stripe): increment with .labels(provider=..., status=...).inc(),
# status being the outcome ("accepted", "duplicate", "invalid_signature", ...).
WEBHOOKS_RECEIVED = Counter(
    "billing_webhooks_received",
    "Provider webhooks received, by provider and outcome.",
    ["provider", "status"],
)
LEDGER_ENTRIES = Counter(
    "billing_ledger_entries_posted",
    "Ledger entries committed, by direction and event type.",
    ["direction", "event_type"],
)
NOTIFICATION_DELIVERIES = Counter(
    "billing_notification_deliveries",
    "Notification delivery attempts, by channel and outcome (delivered, retry, failed).",
    ["channel", "outcome"],
)
LOW_BALANCE_TRANSITIONS = Counter(
    "billing_low_balance_transitions",
    "Low-balance state changes, by kind (low, recovered, armed) and source (check, scan).",
    ["kind", "source"],
)
