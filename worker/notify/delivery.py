"""Delivery of outbox messages as Standard-Webhooks-signed POSTs (and e-mail).

``deliver`` sends one row: it claims the row with a short lease, POSTs outside any
transaction, then records the attempt and either marks the row delivered, schedules the next
attempt, or gives up. Every attempt is signed afresh with a new ``webhook-timestamp`` (the
``webhook-id`` stays the row id), so a retry hours later still passes the receiver's 5-minute
tolerance.
"""

from __future__ import annotations

import json
import logging
import random
import smtplib
import ssl
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import httpx
from sqlalchemy import func, select, update
from standardwebhooks.webhooks import Webhook

from worker.config import Settings
from worker.infra.db import transaction
from worker.infra.metrics import NOTIFICATION_DELIVERIES
from worker.models import DeliveryAttempt, OutboxMessage, WebhookEndpoint, utcnow
from worker.notify import egress, sealing

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 10.0
# A claimed message is not picked again for this long: longer than one attempt can take, so
# only a worker that died mid-attempt lets it lapse (and then the message is retried).
LEASE_SECONDS = 60
JITTER = 0.1  # each retry delay is stretched or shrunk by up to 10 %


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
        try:
            return endpoint.url, sealing.open_secret(settings, endpoint.secret)
        except sealing.SecretUnreadable as exc:
            return str(exc)


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


def _post(
    settings: Settings, url: str, secret: str, message: OutboxMessage
) -> tuple[int | None, str | None]:
    body = json.dumps(message.payload, separators=(",", ":"), sort_keys=False)
    try:
        # Resolved and checked now, and sent to the address checked (see egress).
        target = egress.target(settings, url)
    except egress.EgressRefused as exc:
        return None, f"refused: {exc}"
    headers = {**sign_headers(secret, message.id, body), "host": target.host_header}
    extensions = {"sni_hostname": target.sni_hostname} if target.sni_hostname else None
    try:
        with httpx.Client(timeout=TIMEOUT_SECONDS, follow_redirects=False) as client:
            response = client.post(
                target.url, content=body.encode(), headers=headers, extensions=extensions
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
    # Both TLS paths verify the server's certificate and name (smtplib's own default context
    # for SMTP_SSL does not). Credentials go only over TLS: config turns smtp:// with a user
    # into STARTTLS, and a server that does not offer it fails the send before any login.
    context = ssl.create_default_context()
    try:
        if target.ssl:
            client: smtplib.SMTP = smtplib.SMTP_SSL(
                target.host, target.port, timeout=TIMEOUT_SECONDS, context=context
            )
        else:
            client = smtplib.SMTP(target.host, target.port, timeout=TIMEOUT_SECONDS)
        with client:
            if target.starttls:
                client.starttls(context=context)
            if target.username:
                if not (target.ssl or target.starttls):  # unreachable through config
                    return "refusing to send SMTP credentials without TLS"
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
            status_code, error = _post(settings, *destination, message)
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
