"""``report``: figures finance asks for; ``report expired`` is breakage (credit that expired
unspent, paid and promotional apart)."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from worker.cli.common import emit, json_option, session
from worker.errors import ValidationFailed
from worker.ledger.breakage import expired_between
from worker.ledger.lot_schemas import ExpiredLineOut, ExpiredReportOut
from worker.ledger.schemas import iso


@click.group("report")
def report() -> None:
    """Reports over the ledger."""


def parse_moment(raw: str, field: str) -> datetime:
    """An RFC 3339 timestamp with an offset, or a date (its midnight UTC)."""
    try:
        if "T" not in raw.upper():
            day = datetime.strptime(raw, "%Y-%m-%d")  # a date: its midnight UTC
            return day.replace(tzinfo=UTC)
        moment = datetime.fromisoformat(raw.upper().replace("Z", "+00:00"))
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise ValidationFailed(
            field, f"must be a date or an RFC 3339 timestamp with an offset, got {raw!r}"
        )
    return moment.astimezone(UTC)


@report.command("expired")
@click.option("--from", "start", required=True, help="Start (inclusive): 2026-12-01 or RFC 3339.")
@click.option("--to", "end", required=True, help="End (exclusive): 2027-01-01 or RFC 3339.")
@json_option
def report_expired(start: str, end: str, as_json: bool) -> None:
    """Credit expired in [--from, --to) per currency, paid and promotional apart (minor units),
    dated by the expiration entries."""
    period = parse_moment(start, "from"), parse_moment(end, "to")
    with session() as s:
        lines = expired_between(s, *period)
    out = ExpiredReportOut(
        start=period[0], end=period[1], currencies=[ExpiredLineOut.of(line) for line in lines]
    )

    def text() -> str:
        return "\n".join(
            [
                f"expired from {iso(out.start)} to {iso(out.end)}",
                *(
                    f"{c.currency} paid {c.paid:>12} promotional {c.promotional:>12} "
                    f"total {c.total:>12}  ({c.lots} lots)"
                    for c in out.currencies
                ),
            ]
        )

    emit(out, as_json, text)
