"""Reports: per-customer analytics, balance at a time, statements and exports
(``/customers/{id}/wallets/...``), and the business-wide ``/analytics/summary``. All ``read``.

Views parse, call one ``worker.reports`` function in one transaction and shape the answer. An
export (and a CSV statement) is checked in a first short transaction (customer, currency,
where the period starts and ends in the chain) and then streamed from a second one: a 404 or
422 is answered as JSON before any byte of the file is sent, and the file is the same cut of
the ledger however long it takes to send.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date, datetime
from typing import Annotated, Any, Literal

from flask import Response, current_app, jsonify, request
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, StrictStr, WithJsonSchema
from pydantic_core import PydanticCustomError

from webhooks.api.schemas import CURRENCY_PATTERN, CustomerPath, UtcTimestamp, _timestamp
from webhooks.auth import BEARER_SECURITY
from webhooks.errors import COMMON_RESPONSES
from webhooks.scopes import requires
from worker.access.scopes import READ
from worker.infra.db import transaction
from worker.reports import analytics, balances, export, periods, statements, summary
from worker.reports.schemas import AnalyticsOut, BalanceAtOut, StatementOut, SummaryOut

bp = APIBlueprint(
    "reports",
    __name__,
    abp_tags=[Tag(name="Reports")],
    abp_security=BEARER_SECURITY,
    abp_responses=COMMON_RESPONSES,
)


def _moment(value: Any) -> date | datetime:
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise PydanticCustomError("date", "is not a calendar date") from None
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    return _timestamp(value)


# A date (its local midnight in `tz`) or an RFC 3339 timestamp with an offset.
Moment = Annotated[
    date | datetime,
    PlainValidator(_moment),
    WithJsonSchema(
        {
            "type": "string",
            "description": "A date (2026-03-01: its midnight in `tz`) or an RFC 3339 timestamp "
            "with an offset.",
            "example": "2026-03-01",
        }
    ),
]
Currency = Annotated[StrictStr, Field(pattern=CURRENCY_PATTERN, description="Wallet currency.")]
Zone = Annotated[
    StrictStr,
    Field(
        max_length=64,
        description="IANA time zone for buckets and dates (default UTC), e.g. Europe/Paris.",
        json_schema_extra={"example": "America/New_York"},
    ),
]


class _Query(BaseModel):
    model_config = ConfigDict(populate_by_name=True)


class AnalyticsQuery(_Query):
    currency: Currency
    from_: Moment = Field(alias="from", description="Start (inclusive).")
    to: Moment = Field(description="End (exclusive).")
    interval: Literal["day", "week", "month"] = Field(
        "day", description="Calendar buckets: day, ISO week (from Monday) or month."
    )
    group_by: Literal["event_type", "reason", "meter"] | None = Field(
        None,
        description="Split each bucket by event type, reason, or meter (usage cost by event name).",
    )
    tz: Zone | None = None


class BalanceQuery(_Query):
    currency: Currency
    at: UtcTimestamp = Field(description="RFC 3339 timestamp with an offset.")


class StatementQuery(_Query):
    currency: Currency
    from_: Moment = Field(alias="from", description="Start (inclusive).")
    to: Moment = Field(description="End (exclusive).")
    tz: Zone | None = None
    format: Literal["json", "csv"] | None = Field(
        None, description="`csv` for the CSV statement (or send `Accept: text/csv`)."
    )
    cursor: Annotated[StrictStr, Field(max_length=20)] | None = Field(
        None, description="`next_cursor` of the previous page of entries."
    )
    limit: int = Field(
        statements.DEFAULT_PAGE,
        ge=1,
        le=statements.MAX_PAGE,
        description=f"Entries per page (default {statements.DEFAULT_PAGE}, max "
        f"{statements.MAX_PAGE}); the totals always cover the whole period.",
    )


class ExportQuery(_Query):
    currency: Currency | None = Field(None, description="Only this wallet (default: all).")
    from_: Moment | None = Field(None, alias="from", description="Start (inclusive).")
    to: Moment | None = Field(None, description="End (exclusive); default: now.")
    tz: Zone | None = None
    format: Literal["csv", "ndjson"] = Field("csv", description="csv (default) or ndjson.")


class SummaryQuery(_Query):
    from_: Moment = Field(alias="from", description="Start (inclusive).")
    to: Moment = Field(description="End (exclusive).")
    tz: Zone | None = None


def _tx():  # type: ignore[no-untyped-def]
    return transaction(current_app.config["SETTINGS"])


def _json(model: BaseModel) -> Response:
    return jsonify(model.model_dump(mode="json", by_alias=True))


def _stream(chunks: Iterator[str], mimetype: str, filename: str) -> Response:
    return Response(
        chunks,
        mimetype=mimetype,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@bp.get("/customers/<customer_id>/wallets/analytics", responses={200: AnalyticsOut})
@requires(READ)
def wallet_analytics(path: CustomerPath, query: AnalyticsQuery) -> Response:
    """Credits, debits, net and count per day, ISO week or month in `tz` (DST-correct), for
    the buckets and groups that have entries. `group_by=meter` gives usage cost per event name
    instead, exact (`cost`, a decimal string), with the wallet's `pending_usage`.

    422 names the field: `from` after `to`, an unknown `tz`, more than 366 buckets (`to`), an
    unknown `interval` or `group_by`.
    """
    p = periods.period(query.from_, query.to, query.tz)
    with _tx() as s:
        report = analytics.analytics(
            s, path.customer_id, query.currency, p, query.interval, query.group_by
        )
        return _json(AnalyticsOut.of(path.customer_id, report))


@bp.get("/customers/<customer_id>/wallets/balance", responses={200: BalanceAtOut})
@requires(READ)
def wallet_balance_at(path: CustomerPath, query: BalanceQuery) -> Response:
    """The wallet's balance at `at`: `after_balance` of the last entry at or before it."""
    with _tx() as s:
        point = balances.balance_at(s, path.customer_id, query.currency, query.at)
        return _json(BalanceAtOut.of(path.customer_id, query.currency.upper(), query.at, point))


def _wants_csv(fmt: str | None) -> bool:
    if fmt is not None:
        return fmt == "csv"
    return request.accept_mimetypes.best_match(["application/json", "text/csv"]) == "text/csv"


@bp.get(
    "/customers/<customer_id>/wallets/statement",
    responses={200: StatementOut},
)
@requires(READ)
def wallet_statement(path: CustomerPath, query: StatementQuery) -> Response:
    """Opening and closing balance, total credits, debits and expired, and the period's
    entries (a page at a time, oldest first). `opening_balance + total_credits -
    total_debits = closing_balance`, always. `format=csv` or `Accept: text/csv`: the same as
    CSV, every entry streamed between an `opening` and a `closing` row."""
    p = periods.period(query.from_, query.to, query.tz)
    if not _wants_csv(query.format):
        with _tx() as s:
            st = statements.statement(
                s, path.customer_id, query.currency, p, cursor=query.cursor, limit=query.limit
            )
            return _json(StatementOut.of(st))
    with _tx() as s:
        currency = balances.checked_wallet(s, path.customer_id, query.currency)
        part = balances.span(s, path.customer_id, currency, p.start, p.end)
    customer_id, settings = path.customer_id, current_app.config["SETTINGS"]
    start, end = export.iso(p.start), export.iso(p.end)

    def chunks() -> Iterator[str]:
        # Runs while the response is sent, after the request's context is gone.
        with transaction(settings) as s:
            yield from export.statement_chunks(s, customer_id, part, start, end)

    return _stream(chunks(), "text/csv", f"statement-{currency}.csv")


# The 200's content (CSV and NDJSON, with examples) is documented by webhooks.openapi.
@bp.get("/customers/<customer_id>/wallets/ledger-entries/export")
@requires(READ)
def export_ledger_entries(path: CustomerPath, query: ExportQuery) -> Response:
    """Every entry of the period (default: all of them), oldest first (the ledger's order),
    as CSV with a header row, or NDJSON with `format=ndjson`; streamed in constant memory."""
    tz = periods.zone(query.tz)
    start = None if query.from_ is None else periods.resolve(query.from_, tz, "from")
    end = None if query.to is None else periods.resolve(query.to, tz, "to")
    if start is not None and end is not None and start > end:
        periods.period(start, end)  # raises, naming `from`
    with _tx() as s:
        parts = export.spans(s, path.customer_id, query.currency, start, end)
    customer_id, fmt = path.customer_id, query.format
    settings = current_app.config["SETTINGS"]

    def chunks() -> Iterator[str]:
        # Runs while the response is sent, after the request's context is gone.
        with transaction(settings) as s:
            yield from export.chunks(s, customer_id, parts, fmt)

    if fmt == "ndjson":
        return _stream(chunks(), "application/x-ndjson", "ledger-entries.ndjson")
    return _stream(chunks(), "text/csv", "ledger-entries.csv")


@bp.get("/analytics/summary", responses={200: SummaryOut})
@requires(READ)
def business_summary(query: SummaryQuery) -> Response:
    """Per currency: credited and debited by event type, expired (paid and promotional),
    liability (every wallet's balance) at `to`, unbilled and pending usage now."""
    p = periods.period(query.from_, query.to, query.tz)
    with _tx() as s:
        return _json(SummaryOut.of(p.start, p.end, summary.summary(s, p)))
