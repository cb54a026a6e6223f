"""Signed provider deliveries for the webhook tests (real `standardwebhooks` and `stripe`)."""

from __future__ import annotations

import copy
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import stripe
from sqlalchemy import func, select
from standardwebhooks import Webhook

from tests.support.processes import create_pg_database, drop_pg_database, process_env, wait_until
from worker.config import Settings
from worker.infra import migrate
from worker.infra.db import get_engine, transaction
from worker.models import InboxEvent

# Copies of /work/shared/fixtures/dodo (Dodo-shaped payloads), so a fresh clone is complete.
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "dodo"

DODO_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OTHER_SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk="
STRIPE_SECRET = "whsec_stripe_test_secret_123"


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def dodo_payment(
    *,
    payment_id: str | None = None,
    customer_id: str = "cus_8VbC6JDZzPEqfBPUdpj0K",
    email: str = "ada@example.com",
    total: int = 2000,
    wallet_credit: Any = "2000",
    product_cart: list[dict[str, Any]] | None = None,
    currency: str = "USD",
) -> dict[str, Any]:
    """The fixture's payment.succeeded, with the given fields replaced."""
    payload = copy.deepcopy(fixture("payment.succeeded"))
    data = payload["data"]
    data["payment_id"] = payment_id or "pay_" + uuid.uuid4().hex[:16]
    data["customer"]["customer_id"] = customer_id
    data["customer"]["email"] = email
    data["total_amount"] = total
    data["currency"] = currency
    data["metadata"] = {} if wallet_credit is None else {"wallet_credit": wallet_credit}
    data["product_cart"] = product_cart if product_cart is not None else []
    return payload


def dodo_refund(payment_id: str, amount: int, refund_id: str | None = None) -> dict[str, Any]:
    payload = copy.deepcopy(fixture("refund.succeeded"))
    payload["data"]["payment_id"] = payment_id
    payload["data"]["amount"] = amount
    payload["data"]["refund_id"] = refund_id or "ref_" + uuid.uuid4().hex[:12]
    return payload


def dodo_headers(
    body: str | bytes,
    *,
    secret: str = DODO_SECRET,
    msg_id: str | None = None,
    timestamp: float | None = None,
) -> dict[str, str]:
    """Standard Webhooks headers, signed by the `standardwebhooks` package."""
    text = body.decode() if isinstance(body, bytes) else body
    msg_id = msg_id or "msg_" + uuid.uuid4().hex
    when = datetime.fromtimestamp(time.time() if timestamp is None else timestamp, UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, when, text),
        "content-type": "application/json",
    }


def stripe_event(event_type: str, obj: dict[str, Any]) -> dict[str, Any]:
    """An Event as Stripe sends it, built from stripe's own object model."""
    event = stripe.Event.construct_from(
        {
            "id": "evt_" + uuid.uuid4().hex[:24],
            "object": "event",
            "api_version": "2024-06-20",
            "created": int(time.time()),
            "type": event_type,
            "livemode": False,
            "pending_webhooks": 1,
            "data": {"object": obj},
        },
        key=None,
    )
    return event.to_dict()


def stripe_headers(body: str, *, secret: str = STRIPE_SECRET, timestamp: int | None = None):
    """``Stripe-Signature`` computed with stripe's own helper (the v1 scheme)."""
    return {
        "Stripe-Signature": stripe.WebhookSignature.generate_signature_header(
            body, secret, timestamp=timestamp
        ),
        "content-type": "application/json",
    }


def dumps(payload: dict[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"))


# -- real processes ----------------------------------------------------------------------------


@contextmanager
def migrated_pg_database() -> Iterator[Settings]:
    """A fresh, migrated PostgreSQL database of its own; dropped afterwards."""
    name, url = create_pg_database("bw_webhooks")
    settings = Settings(database_url=url)
    try:
        migrate.upgrade(settings)
        yield settings
    finally:
        get_engine(settings).dispose()
        drop_pg_database(name)


def stack_env(settings: Settings, broker_url: str, **extra: str) -> dict[str, str]:
    return process_env(
        DATABASE_URL=settings.database_url,
        CELERY_BROKER_URL=broker_url,
        DODO_WEBHOOK_SECRET=DODO_SECRET,
        STRIPE_WEBHOOK_SECRET=STRIPE_SECRET,
        **extra,
    )


def post_dodo(base: str, payload: dict[str, Any], **kwargs: Any) -> httpx.Response:
    body = dumps(payload)
    return httpx.post(
        base + "/webhooks/dodo", content=body, headers=dodo_headers(body, **kwargs), timeout=15
    )


def status_counts(settings: Settings) -> dict[str, int]:
    with transaction(settings) as s:
        rows = s.execute(select(InboxEvent.status, func.count()).group_by(InboxEvent.status))
        return {status: count for status, count in rows}


def wait_processed(settings: Settings, total: int, timeout: float = 60) -> None:
    """Until ``total`` events are out of pending (processed or ignored or failed)."""

    def done() -> bool:
        counts = status_counts(settings)
        return sum(counts.values()) >= total and counts.get("pending", 0) == 0

    wait_until(done, timeout=timeout, interval=0.2, what=f"{total} inbox events processed")
