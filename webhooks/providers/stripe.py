"""``POST /webhooks/stripe``: Stripe, signed in the ``Stripe-Signature`` header."""

from __future__ import annotations

import stripe
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
from worker.errors import BadSignature, InvalidEvent, ProviderDisabled

# Standard Webhooks' and Stripe's tolerance: older or future-dated deliveries are replays.
TOLERANCE_SECONDS = 300


@bp.post("/stripe", responses=RESPONSES)
def stripe_webhook() -> Response:
    """Stripe (``Stripe-Signature``)."""
    secret = current_app.config["SETTINGS"].stripe_webhook_secret
    if not secret:
        raise ProviderDisabled("stripe")
    body = utf8_body()
    header = request.headers.get("Stripe-Signature", "")
    try:
        # The check Webhook.construct_event makes (v1 HMAC, 300 s tolerance), without building
        # a StripeObject we do not need; the body is parsed below so that a signed non-JSON
        # body is a 400, not a 401.
        stripe.WebhookSignature.verify_header(body, header, secret, TOLERANCE_SECONDS)
    except (stripe.SignatureVerificationError, ValueError, TypeError, OverflowError):
        raise BadSignature("stripe-signature") from None
    payload = parse_json(body)
    event_id = payload.get("id")
    if not isinstance(event_id, str) or not EVENT_ID.fullmatch(event_id):
        raise InvalidEvent("id", "expected the event's evt_ id")
    return store("stripe", event_id, valid_event_type(payload.get("type"), "type"), payload)
