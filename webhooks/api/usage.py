"""Usage events, wire-compatible with Dodo Payments: ``POST /events/ingest``, ``GET /events``.

The view validates the request's shape, stores and prices the events in one transaction,
commits, and only then asks a worker to bill them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from flask import Response, current_app, jsonify
from flask_openapi3 import APIBlueprint, Tag
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
)

from webhooks.api.schemas import CustomerId, PageQuery
from webhooks.auth import BEARER_SECURITY
from webhooks.errors import BODY_RESPONSES, COMMON_RESPONSES
from webhooks.scopes import requires
from worker import usage
from worker.access.scopes import DEBIT, READ
from worker.infra.db import transaction
from worker.usage.pricing import get_pricing
from worker.usage.schemas import IngestOut, UsageEventListOut, UsageEventOut

bp = APIBlueprint(
    "usage",
    __name__,
    abp_tags=[Tag(name="Usage events")],
    abp_security=BEARER_SECURITY,
    abp_responses=COMMON_RESPONSES,
)

# Dodo's documented limits: 50 pairs per event, keys up to 100 and values up to 500 chars.
MetadataValue = (
    Annotated[StrictStr, Field(max_length=500)]
    | StrictBool
    | StrictInt
    | Annotated[StrictFloat, Field(allow_inf_nan=False)]
)


class EventIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    event_id: StrictStr = Field(
        min_length=1, max_length=255, description="Idempotency key: a seen event_id is ignored."
    )
    customer_id: CustomerId
    event_name: StrictStr = Field(min_length=1, max_length=255)
    timestamp: datetime | None = Field(
        None,
        description="Defaults to now; older than 1 hour or over 5 minutes ahead is rejected. "
        "Without an offset it is taken as UTC.",
    )
    metadata: dict[Annotated[str, Field(max_length=100)], MetadataValue] | None = Field(
        None,
        max_length=50,
        description="Strings, numbers or booleans only; a price's quantity_key is read here.",
    )


class IngestBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    events: list[EventIn] = Field(max_length=usage.MAX_EVENTS_PER_REQUEST)


class EventListQuery(PageQuery):
    customer_id: str | None = None
    event_name: str | None = None
    status: str | None = Field(None, description="pending, processed, unbilled, unpriced, invalid")


class EventPath(BaseModel):
    event_id: str = Field(max_length=255)


def _settings():  # type: ignore[no-untyped-def]
    return current_app.config["SETTINGS"]


@bp.post("/events/ingest", responses={200: IngestOut, **BODY_RESPONSES})
@requires(DEBIT)
def ingest(body: IngestBody) -> Response:
    """Store usage events; answers how many were new, and which were not stored because
    their `event_id` belongs to another customer's event (`conflicts`).

    All or nothing: 422 lists every invalid event by index and field and stores none.
    """
    settings = _settings()
    events = [
        usage.NewEvent(
            event_id=e.event_id,
            customer_id=e.customer_id,
            event_name=e.event_name,
            timestamp=(
                e.timestamp.replace(tzinfo=UTC)
                if e.timestamp is not None and e.timestamp.tzinfo is None
                else e.timestamp
            ),
            metadata=e.metadata,
        )
        for e in body.events
    ]
    with transaction(settings) as session:
        ingested = usage.ingest(session, events, pricing=get_pricing(settings))
    if ingested.count and current_app.config.get("USAGE_ENQUEUE", True):
        from tasks.enqueue import enqueue_billing

        enqueue_billing()
    return jsonify(IngestOut.of(ingested).model_dump(mode="json"))


@bp.get("/events", responses={200: UsageEventListOut})
@requires(READ)
def list_events(query: EventListQuery) -> Response:
    """Stored events, newest first, with their status and exact cost."""
    settings = _settings()
    with transaction(settings) as session:
        events = usage.list_events(
            session,
            customer_id=query.customer_id,
            event_name=query.event_name,
            status=query.status,
            page_number=query.page_number,
            page_size=query.page_size,
        )
        items = [UsageEventOut.of(e, settings.business_id) for e in events]
    return jsonify(UsageEventListOut(items=items).model_dump(mode="json"))


@bp.get("/events/<event_id>", responses={200: UsageEventOut})
@requires(READ)
def get_event(path: EventPath) -> Response:
    """One stored event."""
    settings = _settings()
    with transaction(settings) as session:
        event = usage.get_event(session, path.event_id)
        out = UsageEventOut.of(event, settings.business_id)
    return jsonify(out.model_dump(mode="json"))
