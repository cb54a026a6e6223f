"""Notification destinations: webhook endpoints and which event types reach anyone.

An endpoint subscribes to a list of event types (or ``*``); the operator's NOTIFY_WEBHOOK and
SMTP settings are destinations too. ``is_subscribed`` is asked on every ledger entry, so the
answer is cached for a few seconds per database.
"""

from __future__ import annotations

import base64
import secrets
import time

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.config import Settings, redact_url
from worker.errors import NotFound, ValidationFailed
from worker.infra.db import settings_of, transaction
from worker.models import WebhookEndpoint, new_id, utcnow
from worker.notify import egress, sealing

EVENT_TYPES = (
    "wallet.balance_low",
    "wallet.balance_recovered",
    "wallet.ledger_entry.created",
    "usage.unbilled",
    "payment.refund_shortfall",
    "wallet.credits_expiring",
    "wallet.credits_expired",
    "wallet.hold_expired",
    "wallet.depleted",
    "payment.dispute_shortfall",
)
EMAIL_EVENT_TYPES = ("wallet.balance_low",)


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def parse_event_types(raw: str | None) -> str:
    """``a,b`` -> a validated, normalised comma-separated list; empty or ``*`` -> ``*``."""
    names = [n.strip() for n in (raw or "").split(",") if n.strip()]
    if not names or names == ["*"]:
        return "*"
    unknown = [n for n in names if n not in EVENT_TYPES]
    if unknown:
        raise ValidationFailed(
            "events", f"unknown event type(s) {', '.join(unknown)}; known: {', '.join(EVENT_TYPES)}"
        )
    return ",".join(dict.fromkeys(names))


def add_endpoint(session: Session, url: str, events: str | None = None) -> WebhookEndpoint:
    """Register URL; the returned row's secret is stored sealed: read it with
    ``endpoint_secret`` (shown to the operator once, at creation)."""
    try:
        parsed = httpx.URL(url) if url else None
    except httpx.InvalidURL:
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValidationFailed("url", f"expected an http(s) URL, got {redact_url(url)!r}")
    settings = settings_of(session)
    refusal = egress.check_new_url(settings, parsed)
    if refusal is not None:
        raise ValidationFailed("url", refusal)
    endpoint = WebhookEndpoint(
        id=new_id("ep", 16),
        url=url,
        secret=sealing.seal(settings, new_secret()),
        events=parse_event_types(events),
        enabled=True,
        created_at=utcnow(),
    )
    session.add(endpoint)
    session.flush()
    _subscriptions.clear()
    return endpoint


def endpoint_secret(settings: Settings, endpoint: WebhookEndpoint) -> str:
    """The signing secret of ``endpoint`` (opened from its stored, sealed form)."""
    return sealing.open_secret(settings, endpoint.secret)


def seal_secrets(session: Session) -> int:
    """Seal every plaintext endpoint secret and re-seal the others under the first
    ENDPOINT_SECRET_KEY; returns how many rows changed."""
    settings = settings_of(session)
    changed = 0
    for endpoint in session.scalars(select(WebhookEndpoint).with_for_update()):
        stored = sealing.reseal(settings, endpoint.secret)
        if stored != endpoint.secret:
            endpoint.secret = stored
            changed += 1
    return changed


def list_endpoints(session: Session) -> list[WebhookEndpoint]:
    return list(session.scalars(select(WebhookEndpoint).order_by(WebhookEndpoint.created_at)))


def remove_endpoint(session: Session, endpoint_id: str) -> None:
    """Disable an endpoint (its pending messages then fail); the row stays for the log."""
    endpoint = session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None:
        raise NotFound(f"Endpoint {endpoint_id} not found", endpoint_id=endpoint_id)
    endpoint.enabled = False
    _subscriptions.clear()


def _subscribes(events: str, event_type: str) -> bool:
    return events == "*" or event_type in events.split(",")


# Which event types have at least one enabled endpoint, per database, for a few seconds: the
# ledger asks on every entry whether anyone wants wallet.ledger_entry.created.
_SUBSCRIPTION_TTL = 5.0
_subscriptions: dict[str, tuple[float, list[str]]] = {}


def _endpoint_event_lists(settings: Settings, session: Session | None) -> list[str]:
    url = settings.database_url
    cached = _subscriptions.get(url)
    if cached and time.monotonic() - cached[0] < _SUBSCRIPTION_TTL:
        return cached[1]
    query = select(WebhookEndpoint.events).where(WebhookEndpoint.enabled.is_(True))
    if session is None:
        with transaction(settings) as own:
            events = list(own.scalars(query))
    else:
        events = list(session.scalars(query))
    _subscriptions[url] = (time.monotonic(), events)
    return events


def is_subscribed(session: Session, event_type: str) -> bool:
    """Whether any destination wants ``event_type`` (cheap: cached for a few seconds)."""
    return wants(settings_of(session), event_type, session)


def wants(settings: Settings, event_type: str, session: Session | None = None) -> bool:
    """``is_subscribed`` for a caller without a session: a stale cache is refreshed in a
    transaction of its own."""
    if settings.notify_webhook is not None:
        return True
    if settings.smtp is not None and event_type in EMAIL_EVENT_TYPES:
        return True
    return any(_subscribes(e, event_type) for e in _endpoint_event_lists(settings, session))
