"""``POST /webhooks/dodo``: Dodo Payments, signed per Standard Webhooks (``webhook-id``,
``webhook-timestamp``, ``webhook-signature``)."""

from __future__ import annotations

import logging
import re
from functools import lru_cache

import standardwebhooks
from flask import Response, current_app, request

from webhooks.providers.receiver import (
    EVENT_ID,
    RESPONSES,
    bp,
    parse_json,
    store,
    utf8_body,
    valid_event_type,
)
from worker.errors import BadSignature, InvalidHeader, ProviderDisabled

log = logging.getLogger(__name__)


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
        raise ProviderDisabled("dodo")
    body = utf8_body()
    try:
        verifiers = _dodo_verifiers(secrets)
    except Exception as exc:  # a malformed configured secret is our fault, not the sender's
        log.error("DODO_WEBHOOK_SECRET is not a valid whsec_ secret: %s", exc)
        raise ProviderDisabled("dodo") from None
    headers = {
        name: request.headers.get(name, "")
        for name in ("webhook-id", "webhook-timestamp", "webhook-signature")
    }
    _verify_dodo(verifiers, body, headers)
    payload = parse_json(body)
    event_id = headers["webhook-id"]
    if not EVENT_ID.fullmatch(event_id):
        raise InvalidHeader("webhook-id", "malformed")
    return store("dodo", event_id, valid_event_type(payload.get("type"), "type"), payload)


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
    raise BadSignature("webhook-signature")
