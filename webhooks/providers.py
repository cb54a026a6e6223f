"""Provider webhook receivers: verify on the raw bytes, store in the inbox, answer, enqueue.

No API key here: the provider's signature is the authentication. A provider whose secret is
not configured is disabled (404), never accepted unsigned. The request does no processing: one
short committed INSERT, then a worker applies the stored events in batches
(``tasks.inbox.process_pending``, sent at most once per 20 ms per process).
"""

from __future__ import annotations

import json
import logging
import re
from functools import lru_cache
from typing import Any

import standardwebhooks
import stripe
from flask import Response, current_app, jsonify, request
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel
from sqlalchemy.exc import DataError

from tasks.enqueue import enqueue_inbox as enqueue
from webhooks import strict_json
from webhooks.errors import ErrorOut, error_response
from worker import inbox

log = logging.getLogger(__name__)

# Standard Webhooks' and Stripe's tolerance: older or future-dated deliveries are replays.
TOLERANCE_SECONDS = 300
_EVENT_TYPE = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_EVENT_ID = re.compile(r"[\x21-\x7e]{1,255}")  # printable ASCII, no spaces

bp = APIBlueprint(
    "provider_webhooks",
    __name__,
    url_prefix="/webhooks",
    abp_tags=[Tag(name="Provider webhooks")],
)


class Accepted(BaseModel):
    """The delivery is stored (``duplicate``: it already was); processing is asynchronous."""

    event_id: int | None
    duplicate: bool
    status: str = "accepted"


RESPONSES = {
    200: Accepted,
    400: ErrorOut,
    401: ErrorOut,
    404: ErrorOut,
    413: ErrorOut,
    503: ErrorOut,
}


class _Rejected(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.response = error_response(status, code, message, **({"field": field} if field else {}))


@lru_cache(maxsize=8)
def _dodo_verifiers(secrets: str) -> tuple[standardwebhooks.Webhook, ...]:
    # Several secrets (space or comma separated) verify during our own secret rotation.
    return tuple(
        standardwebhooks.Webhook(secret) for secret in re.split(r"[\s,]+", secrets) if secret
    )


@bp.post("/dodo", responses=RESPONSES)
def dodo() -> Response:
    """Dodo Payments (Standard Webhooks: ``webhook-id``, ``webhook-timestamp``,
    ``webhook-signature``)."""
    secrets = current_app.config["SETTINGS"].dodo_webhook_secret
    if not secrets:
        return _disabled("dodo")
    try:
        body = _utf8_body()
        try:
            verifiers = _dodo_verifiers(secrets)
        except Exception as exc:  # a malformed configured secret is our fault, not the sender's
            log.error("DODO_WEBHOOK_SECRET is not a valid whsec_ secret: %s", exc)
            return _disabled("dodo")
        headers = {
            name: request.headers.get(name, "")
            for name in ("webhook-id", "webhook-timestamp", "webhook-signature")
        }
        _verify_dodo(verifiers, body, headers)
        payload = _json(body)
        event_id = headers["webhook-id"]
        if not _EVENT_ID.fullmatch(event_id):
            raise _Rejected(400, "INVALID_HEADER", "webhook-id: malformed", "webhook-id")
        return _store("dodo", event_id, _event_type(payload.get("type"), "type"), payload)
    except _Rejected as rejected:
        return rejected.response


def _verify_dodo(
    verifiers: tuple[standardwebhooks.Webhook, ...], body: str, headers: dict[str, str]
) -> None:
    for verifier in verifiers:
        try:
            verifier.verify(body, headers, json_parse=False)
            return
        # The package raises plain ValueError/binascii.Error (a ValueError) on malformed
        # signature lists, and OverflowError/TypeError can escape on absurd timestamps.
        except (standardwebhooks.WebhookVerificationError, ValueError, OverflowError, TypeError):
            continue
    raise _Rejected(401, "INVALID_SIGNATURE", "webhook-signature: verification failed")


@bp.post("/stripe", responses=RESPONSES)
def stripe_webhook() -> Response:
    """Stripe (``Stripe-Signature``)."""
    secret = current_app.config["SETTINGS"].stripe_webhook_secret
    if not secret:
        return _disabled("stripe")
    try:
        body = _utf8_body()
        header = request.headers.get("Stripe-Signature", "")
        try:
            # The check Webhook.construct_event makes (v1 HMAC, 300 s tolerance), without
            # building a StripeObject we do not need; the body is parsed below so that a signed
            # non-JSON body is a 400, not a 401.
            stripe.WebhookSignature.verify_header(body, header, secret, TOLERANCE_SECONDS)
        except (stripe.SignatureVerificationError, ValueError, TypeError, OverflowError):
            raise _Rejected(
                401, "INVALID_SIGNATURE", "stripe-signature: verification failed"
            ) from None
        payload = _json(body)
        event_id = payload.get("id")
        if not isinstance(event_id, str) or not _EVENT_ID.fullmatch(event_id):
            raise _Rejected(400, "INVALID_EVENT", "id: expected the event's evt_ id", "id")
        return _store("stripe", event_id, _event_type(payload.get("type"), "type"), payload)
    except _Rejected as rejected:
        return rejected.response


def _disabled(provider: str) -> Response:
    return error_response(
        404, "PROVIDER_DISABLED", f"{provider} webhooks are not configured on this service"
    )


def _utf8_body() -> str:
    # get_data() enforces MAX_CONTENT_LENGTH (413) before reading the whole body.
    raw = request.get_data(cache=False)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _Rejected(400, "MALFORMED_BODY", "body: not UTF-8", "body") from None


def _json(body: str) -> dict[str, Any]:
    try:
        payload = strict_json.loads(body)
    except (ValueError, RecursionError):
        raise _Rejected(400, "MALFORMED_JSON", "body: not valid JSON", "body") from None
    if not isinstance(payload, dict):
        raise _Rejected(400, "MALFORMED_JSON", "body: expected a JSON object", "body")
    if _SURROGATE_ESCAPE.search(body) and _has_lone_surrogate(payload):
        # Valid JSON syntax, but not Unicode text: PostgreSQL refuses it; refuse it everywhere.
        raise _Rejected(400, "MALFORMED_JSON", "body: unpaired UTF-16 surrogate escape", "body")
    return payload


def _has_lone_surrogate(payload: dict[str, Any]) -> bool:
    try:
        json.dumps(payload, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _event_type(value: Any, field: str) -> str:
    if not isinstance(value, str) or not _EVENT_TYPE.fullmatch(value):
        raise _Rejected(400, "INVALID_EVENT", f"{field}: expected an event type string", field)
    return value


def _store(provider: str, event_id: str, event_type: str, payload: dict[str, Any]) -> Response:
    # One short transaction; OperationalError (database down) becomes 503 in webhooks.errors,
    # so a provider never gets a 2xx for an event that is not stored.
    try:
        stored_id = inbox.store_event(
            current_app.config["SETTINGS"],
            provider=provider,
            provider_event_id=event_id,
            event_type=event_type,
            payload=payload,
        )
    except DataError:  # e.g. a lone surrogate PostgreSQL's json type refuses
        raise _Rejected(
            400, "MALFORMED_JSON", "body: not storable JSON (invalid unicode)", "body"
        ) from None
    if stored_id is not None:
        enqueue()  # after the commit, never inside it; coalesced with other requests
    return jsonify({"event_id": stored_id, "duplicate": stored_id is None, "status": "accepted"})
