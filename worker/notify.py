"""Outbound notifications: a transactional outbox delivered as Standard-Webhooks-signed POSTs.

``enqueue_event`` writes one outbox row per destination in the caller's transaction (so a
notification exists if and only if the change that caused it committed). ``deliver`` sends one
row: it claims the row with a short lease, POSTs outside any transaction, then records the
attempt and either marks the row delivered, schedules the next attempt, or gives up.

The outbox row id is the ``webhook-id``: it stays the same across retries, so receivers can
deduplicate; every attempt is signed afresh with a new ``webhook-timestamp`` so a retry hours
later still passes the receiver's 5-minute tolerance.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import secrets
import smtplib
import ssl
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import httpx
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session
from standardwebhooks.webhooks import Webhook

from worker.config import Settings
from worker.db import settings_of, transaction
from worker.errors import NotFound, ValidationFailed
from worker.metrics import NOTIFICATION_DELIVERIES
from worker.models import DeliveryAttempt, OutboxMessage, WebhookEndpoint, new_id, utcnow

log = logging.getLogger(__name__)

EVENT_TYPES = (
    "wallet.balance_low",
    "wallet.balance_recovered",
    "wallet.ledger_entry.created",
    "usage.unbilled",
    "payment.refund_shortfall",
)
EMAIL_EVENT_TYPES = ("wallet.balance_low",)
TIMEOUT_SECONDS = 10.0
# A claimed message is not picked again for this long: longer than one attempt can take, so
# only a worker that died mid-attempt lets it lapse (and then the message is retried).
LEASE_SECONDS = 60
JITTER = 0.1  # each retry delay is stretched or shrunk by up to 10 %
SESSION_KEY = "bw_outbox_new"  # message ids written in this session, delivered after commit
ENDPOINTS_KEY = "bw_endpoints"  # (transaction, enabled endpoints read in it)


# -- endpoints -----------------------------------------------------------------------------


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
    """Register URL; the returned row carries its freshly generated secret."""
    parsed = httpx.URL(url) if url else None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValidationFailed("url", f"expected an http(s) URL, got {url!r}")
    endpoint = WebhookEndpoint(
        id=new_id("ep", 16),
        url=url,
        secret=new_secret(),
        events=parse_event_types(events),
        enabled=True,
        created_at=utcnow(),
    )
    session.add(endpoint)
    session.flush()
    _subscriptions.clear()
    return endpoint


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


# -- writing to the outbox -----------------------------------------------------------------


def envelope(settings: Settings, event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    """Dodo Payments' webhook envelope."""
    now = utcnow().isoformat().replace("+00:00", "Z")
    return {"business_id": settings.business_id, "type": event_type, "timestamp": now, "data": data}


def enqueue_event(session: Session, event_type: str, data: dict[str, Any]) -> list[OutboxMessage]:
    """Write one outbox message per destination subscribed to ``event_type``. Never commits.

    Call it inside the transaction of the change being announced; the messages are sent by
    the worker after that transaction commits (and by the beat sweeper if that send is lost).
    """
    if event_type not in EVENT_TYPES:
        raise ValidationFailed("type", f"unknown event type {event_type!r}")
    settings = settings_of(session)
    payload = envelope(settings, event_type, data)
    now = utcnow()
    targets: list[tuple[str, str | None]] = []
    if settings.notify_webhook is not None:
        targets.append(("webhook", None))
    targets += [
        ("webhook", e.id) for e in _endpoints_in(session) if _subscribes(e.events, event_type)
    ]
    if settings.smtp is not None and event_type in EMAIL_EVENT_TYPES:
        targets.append(("email", None))
    messages = [
        OutboxMessage(
            id=new_id("msg"),
            endpoint_id=endpoint_id,
            channel=channel,
            event_type=event_type,
            payload=payload,
            status="pending",
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
        for channel, endpoint_id in targets
    ]
    # No flush here: the rows go out with the transaction's next flush, batched when a scan
    # announces many crossings in one transaction.
    session.add_all(messages)
    if messages:
        session.info.setdefault(SESSION_KEY, []).extend(m.id for m in messages)
    return messages


def _endpoints_in(session: Session) -> list[Any]:
    """Enabled endpoints, read once per transaction (not from the few-seconds cache: a
    message is being written, so a just-added endpoint must get it)."""
    current = session.get_transaction()
    cached = session.info.get(ENDPOINTS_KEY)
    if cached is not None and cached[0] is current:
        return cached[1]
    endpoints = list(
        session.execute(
            select(WebhookEndpoint.id, WebhookEndpoint.events).where(
                WebhookEndpoint.enabled.is_(True)
            )
        )
    )
    session.info[ENDPOINTS_KEY] = (current, endpoints)
    return endpoints


# -- delivery ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    message_id: str
    status: str  # delivered | pending (will retry) | failed | skipped (not due / not found)
    status_code: int | None = None
    error: str | None = None


def _claim(settings: Settings, message_id: str, force: bool) -> OutboxMessage | None:
    # A conditional UPDATE is the lock: of several deliverers racing (the after-commit task,
    # the sweeper, a manual resend), exactly one sees the row come back.
    with transaction(settings) as session:
        now = utcnow()
        query = update(OutboxMessage).where(
            OutboxMessage.id == message_id, OutboxMessage.status == "pending"
        )
        if not force:
            query = query.where(OutboxMessage.next_attempt_at <= now)
        return session.scalar(
            query.values(
                next_attempt_at=now + timedelta(seconds=LEASE_SECONDS),
                attempts=OutboxMessage.attempts + 1,
            ).returning(OutboxMessage),
            execution_options={"synchronize_session": False},
        )


def _destination(settings: Settings, message: OutboxMessage) -> tuple[str, str] | str:
    """(url, secret), or a reason the message cannot be delivered any more."""
    if message.endpoint_id is None:
        target = settings.notify_webhook
        return target if target is not None else "NOTIFY_WEBHOOK_URL is no longer set"
    with transaction(settings) as session:
        endpoint = session.get(WebhookEndpoint, message.endpoint_id)
        if endpoint is None or not endpoint.enabled:
            return f"endpoint {message.endpoint_id} was removed"
        return endpoint.url, endpoint.secret


def sign_headers(secret: str, message_id: str, body: str) -> dict[str, str]:
    """Standard Webhooks headers for one attempt (a fresh timestamp each time)."""
    now = datetime.now(UTC)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(message_id, now, body),
        "content-type": "application/json",
        "user-agent": "billing-worker",
    }


def _post(url: str, secret: str, message: OutboxMessage) -> tuple[int | None, str | None]:
    body = json.dumps(message.payload, separators=(",", ":"), sort_keys=False)
    try:
        response = httpx.post(
            url,
            content=body.encode(),
            headers=sign_headers(secret, message.id, body),
            timeout=TIMEOUT_SECONDS,
            follow_redirects=False,
        )
    except httpx.TimeoutException:
        return None, f"timeout after {TIMEOUT_SECONDS:g}s"
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"[:500]
    if 200 <= response.status_code < 300:
        return response.status_code, None
    return response.status_code, f"HTTP {response.status_code}"


def _email(settings: Settings, message: OutboxMessage) -> str | None:
    target = settings.smtp
    if target is None:
        return "SMTP_URL / NOTIFY_EMAIL_TO are no longer set"
    data = message.payload.get("data", {})
    mail = EmailMessage()
    mail["From"] = target.sender
    mail["To"] = ", ".join(target.recipients)
    mail["Subject"] = (
        f"Low balance: {data.get('customer_id')} {data.get('currency')} "
        f"{data.get('balance')} < {data.get('threshold')}"
    )
    mail["Message-ID"] = f"<{message.id}@billing-worker>"
    mail.set_content(json.dumps(message.payload, indent=2))
    try:
        client_class = smtplib.SMTP_SSL if target.ssl else smtplib.SMTP
        with client_class(target.host, target.port, timeout=TIMEOUT_SECONDS) as client:
            if target.starttls:
                client.starttls(context=ssl.create_default_context())
            if target.username:
                client.login(target.username, target.password or "")
            client.send_message(mail)
    except (OSError, smtplib.SMTPException) as exc:
        return f"{type(exc).__name__}: {exc}"[:500]
    return None


def retry_delay(settings: Settings, attempts_made: int) -> float | None:
    """Seconds before the next attempt after ``attempts_made`` failures; None: give up."""
    schedule = settings.notify_retry_delays
    if attempts_made > len(schedule):
        return None
    base = schedule[attempts_made - 1]
    return base * random.uniform(1 - JITTER, 1 + JITTER)


def deliver(settings: Settings, message_id: str, *, force: bool = False) -> Outcome:
    """Make one delivery attempt of a pending message, if it is due (or ``force``)."""
    message = _claim(settings, message_id, force)
    if message is None:
        return Outcome(message_id, "skipped")
    started = time.monotonic()
    status_code: int | None = None
    error: str | None
    permanent = False
    if message.channel == "email":
        error = _email(settings, message)
    else:
        destination = _destination(settings, message)
        if isinstance(destination, str):
            error, permanent = destination, True
        else:
            status_code, error = _post(*destination, message)
    latency_ms = int((time.monotonic() - started) * 1000)
    with transaction(settings) as session:
        number = (
            session.scalar(
                select(func.count())
                .select_from(DeliveryAttempt)
                .where(DeliveryAttempt.message_id == message_id)
            )
            or 0
        ) + 1
        session.add(
            DeliveryAttempt(
                message_id=message_id,
                attempt=number,
                status_code=status_code,
                latency_ms=latency_ms,
                error=error,
                created_at=utcnow(),
            )
        )
        now = utcnow()
        if error is None:
            values: dict[str, Any] = {"status": "delivered", "delivered_at": now}
            values["last_error"] = None
            status = "delivered"
        else:
            delay = None if permanent else retry_delay(settings, message.attempts)
            if delay is None:
                values = {"status": "failed", "last_error": error}
                status = "failed"
            else:
                values = {"next_attempt_at": now + timedelta(seconds=delay), "last_error": error}
                status = "pending"
        session.execute(
            update(OutboxMessage).where(OutboxMessage.id == message_id).values(**values),
            execution_options={"synchronize_session": False},
        )
    outcome_label = "retry" if status == "pending" else status
    NOTIFICATION_DELIVERIES.labels(channel=message.channel, outcome=outcome_label).inc()
    log.info(
        "notification %s",
        outcome_label,
        extra={
            "message_id": message_id,
            "event_type": message.event_type,
            "attempt": message.attempts,
            "status_code": status_code,
            "latency_ms": latency_ms,
            "error": error,
        },
    )
    return Outcome(message_id, status, status_code, error)


def due_message_ids(settings: Settings, limit: int = 100) -> list[str]:
    with transaction(settings) as session:
        return list(
            session.scalars(
                select(OutboxMessage.id)
                .where(OutboxMessage.status == "pending", OutboxMessage.next_attempt_at <= utcnow())
                .order_by(OutboxMessage.next_attempt_at)
                .limit(limit)
            )
        )


def dispatch_due(settings: Settings, limit: int = 100, budget_seconds: float = 20.0) -> int:
    """Deliver due messages (retries, and any whose after-commit send was lost)."""
    started = time.monotonic()
    sent = 0
    for message_id in due_message_ids(settings, limit):
        if time.monotonic() - started > budget_seconds:
            break  # the next sweep picks up the rest; a slow endpoint must not pin the sweeper
        if deliver(settings, message_id).status != "skipped":
            sent += 1
    return sent


# -- inspection and manual resend ----------------------------------------------------------


def list_messages(
    session: Session, status: str | None = None, limit: int = 50
) -> list[OutboxMessage]:
    query = select(OutboxMessage).order_by(OutboxMessage.created_at.desc(), OutboxMessage.id)
    if status is not None:
        if status not in ("pending", "delivered", "failed"):
            raise ValidationFailed("status", "must be one of pending, delivered, failed")
        query = query.where(OutboxMessage.status == status)
    return list(session.scalars(query.limit(limit)))


def attempts_of(session: Session, message_id: str) -> list[DeliveryAttempt]:
    return list(
        session.scalars(
            select(DeliveryAttempt)
            .where(DeliveryAttempt.message_id == message_id)
            .order_by(DeliveryAttempt.id)
        )
    )


def resend(session: Session, message_id: str) -> OutboxMessage:
    """Queue a message again (any status) with a fresh retry schedule; same webhook-id."""
    message = session.get(OutboxMessage, message_id)
    if message is None:
        raise NotFound(f"Notification {message_id} not found", message_id=message_id)
    message.status = "pending"
    message.attempts = 0
    message.next_attempt_at = utcnow()
    message.delivered_at = None
    session.flush()
    # Not enqueued after commit: the caller attempts it inline (and the sweeper retries).
    return message
