"""Every entry of a period as CSV (``csv`` module, a header row) or NDJSON, streamed: one
query over the period's chain spans (``balances.span``, fixed before the first row, so the
file is a consistent cut of the ledger even while postings go on), read through a server-side
cursor (``yield_per``) and written out in chunks of about ``CHUNK`` characters. Memory stays
the same for ten entries or ten million; nothing is held but one chunk and one fetch.

Values are written as the API's JSON has them: integers in minor units, ``true``/``false``,
RFC 3339 UTC timestamps; an empty CSV field is a null.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from worker.ledger.customers import get_customer
from worker.ledger.schemas import iso
from worker.ledger.validation import validate_currency
from worker.ledger.wallets import get_wallets
from worker.models import LedgerEntry
from worker.reports.balances import Span, span
from worker.reports.statements import in_span

# The columns, named and ordered as the API's ledger entry (``LedgerEntryOut``).
COLUMNS = (
    "id",
    "amount",
    "after_balance",
    "before_balance",
    "business_id",
    "created_at",
    "currency",
    "customer_id",
    "event_type",
    "is_credit",
    "reason",
    "reference_object_id",
    "idempotency_key",
    "actor",
)
CHUNK = 64 * 1024
FETCH = 2000
FORMATS = ("csv", "ndjson")


def spans(
    session: Session,
    customer_id: str,
    currency: str | None,
    start: datetime | None,
    end: datetime | None,
) -> list[Span]:
    """The customer's wallets' spans for the period (one wallet's with ``currency``). Checks
    the customer (404) and the currency (422) before anything is streamed."""
    get_customer(session, customer_id)
    if currency is not None:
        currencies = [validate_currency(session, currency)]
    else:
        currencies = [w.currency for w in get_wallets(session, customer_id)]
    return [span(session, customer_id, c, start, end) for c in currencies]


def records(session: Session, customer_id: str, parts: Sequence[Span]) -> Iterator[dict[str, Any]]:
    """The spans' entries in ``seq`` order, as the API's JSON values, one fetch at a time."""
    live = [s for s in parts if s.closing.seq > s.opening.seq]
    if not live:
        return
    e = LedgerEntry
    columns = [getattr(e, name) for name in COLUMNS]
    rows = session.execute(
        select(*columns)
        .where(e.customer_id == customer_id, or_(*(in_span(s) for s in live)))
        .order_by(e.seq),
        execution_options={"yield_per": FETCH},
    )
    for row in rows:
        record = dict(zip(COLUMNS, row, strict=True))
        record["created_at"] = iso(record["created_at"])
        record["actor"] = record["actor"] or "unknown"
        yield record


def csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def csv_chunks(rows: Iterable[dict[str, Any]], columns: Sequence[str] = COLUMNS) -> Iterator[str]:
    """A header row, then one row per record, in chunks of about ``CHUNK`` characters."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(columns)
    for record in rows:
        writer.writerow([csv_value(record.get(c)) for c in columns])
        if buffer.tell() >= CHUNK:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def ndjson_chunks(rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    """One JSON object per line, in chunks of about ``CHUNK`` characters."""
    parts: list[str] = []
    size = 0
    for record in rows:
        line = json.dumps(record, separators=(",", ":")) + "\n"
        parts.append(line)
        size += len(line)
        if size >= CHUNK:
            yield "".join(parts)
            parts, size = [], 0
    if parts:
        yield "".join(parts)


def chunks(
    session: Session, customer_id: str, parts: Sequence[Span], fmt: str = "csv"
) -> Iterator[str]:
    """The export's text, streamed."""
    rows = records(session, customer_id, parts)
    return ndjson_chunks(rows) if fmt == "ndjson" else csv_chunks(rows)


STATEMENT_COLUMNS = ("kind", *COLUMNS)


def statement_chunks(
    session: Session, customer_id: str, s: Span, start: str, end: str
) -> Iterator[str]:
    """A statement as CSV: an ``opening`` row (the balance before ``start`` in
    ``after_balance``), every entry of the period (``entry``), a ``closing`` row."""
    currency = s.currency

    def rows() -> Iterator[dict[str, Any]]:
        yield {
            "kind": "opening",
            "created_at": start,
            "currency": currency,
            "customer_id": customer_id,
            "after_balance": s.opening.balance,
        }
        for record in records(session, customer_id, [s]):
            yield {"kind": "entry", **record}
        yield {
            "kind": "closing",
            "created_at": end,
            "currency": currency,
            "customer_id": customer_id,
            "after_balance": s.closing.balance,
        }

    return csv_chunks(rows(), STATEMENT_COLUMNS)
