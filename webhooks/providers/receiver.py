"""What every provider receiver shares: verify on the raw bytes, store in the inbox, answer,
enqueue. ``dodo.py`` and ``stripe.py`` hold only what differs (the signature scheme, where the
event id comes from).

No API key here: the provider's signature is the authentication. A provider whose secret is
not configured is disabled (404), never accepted unsigned. The request does no processing: one
short committed INSERT, then a worker applies the stored events in batches
(``tasks.inbox.process_pending``, sent at most once per 20 ms per process).
"""

from __future__ import annotations

import json
import re
from typing import Any

from flask import Response, current_app, jsonify, request
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel
from sqlalchemy.exc import DataError

from tasks.enqueue import enqueue_inbox as enqueue
from webhooks import strict_json
from webhooks.errors import ErrorOut
from worker import inbox
from worker.errors import InvalidEvent, MalformedBody, MalformedJSON, ValidationFailed

_EVENT_TYPE = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
EVENT_ID = re.compile(r"[\x21-\x7e]{1,255}")  # printable ASCII, no spaces

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


def utf8_body() -> str:
    # get_data() enforces MAX_CONTENT_LENGTH (413) before reading the whole body.
    raw = request.get_data(cache=False)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedBody("body", "not UTF-8") from None


def parse_json(body: str) -> dict[str, Any]:
    try:
        payload = strict_json.loads(body)
    except strict_json.NonFiniteNumber as exc:
        raise ValidationFailed(exc.field, strict_json.NON_FINITE_MESSAGE) from None
    except (ValueError, RecursionError):
        raise MalformedJSON("body", "not valid JSON") from None
    if not isinstance(payload, dict):
        raise MalformedJSON("body", "expected a JSON object")
    if _SURROGATE_ESCAPE.search(body) and _has_lone_surrogate(payload):
        # Valid JSON syntax, but not Unicode text: PostgreSQL refuses it; refuse it everywhere.
        raise MalformedJSON("body", "unpaired UTF-16 surrogate escape")
    return payload


def _has_lone_surrogate(payload: dict[str, Any]) -> bool:
    try:
        json.dumps(payload, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def valid_event_type(value: Any, field: str) -> str:
    if not isinstance(value, str) or not _EVENT_TYPE.fullmatch(value):
        raise InvalidEvent(field, "expected an event type string")
    return value


def store(provider: str, event_id: str, event_type: str, payload: dict[str, Any]) -> Response:
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
        raise MalformedJSON("body", "not storable JSON (invalid unicode)") from None
    if stored_id is not None:
        enqueue()  # after the commit, never inside it; coalesced with other requests
    return jsonify({"event_id": stored_id, "duplicate": stored_id is None, "status": "accepted"})
