"""``report``: figures finance asks for; ``report expired`` is breakage (credit that expired
unspent, paid and promotional apart), ``report summary`` the business-wide figures. And
``ledger export``, a customer's entries as CSV or NDJSON on stdout (``worker.reports``)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, date, datetime

import click

from worker.cli.common import emit, json_option, session
from worker.errors import ValidationFailed
from worker.ledger.breakage import expired_between
from worker.ledger.lot_schemas import ExpiredLineOut, ExpiredReportOut
from worker.ledger.schemas import iso
from worker.reports import export, periods, summary
from worker.reports.schemas import SummaryOut


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


def parse_local(raw: str | None, field: str) -> date | datetime | None:
    """A date (its midnight in --tz) or an RFC 3339 timestamp with an offset; None stays."""
    if raw is None:
        return None
    if "T" not in raw.upper():
        try:
            return datetime.strptime(raw, "%Y-%m-%d").date()
        except ValueError:
            pass
    return parse_moment(raw, field)


tz_option = click.option("--tz", help="IANA time zone for dates (default UTC), e.g. Europe/Paris.")


@report.command("summary")
@click.option("--from", "start", required=True, help="Start (inclusive): 2026-12-01 or RFC 3339.")
@click.option("--to", "end", required=True, help="End (exclusive): 2027-01-01 or RFC 3339.")
@tz_option
@json_option
def report_summary(start: str, end: str, tz: str | None, as_json: bool) -> None:
    """Business-wide figures per currency for [--from, --to): credited and debited by event
    type, expired (paid, promotional), liability and held at --to, unbilled usage now."""
    p = periods.period(parse_local(start, "from"), parse_local(end, "to"), tz)  # type: ignore[arg-type]
    with session() as s:
        out = SummaryOut.of(p.start, p.end, summary.summary(s, p))

    def text() -> str:
        lines = [f"summary from {iso(out.from_)} to {iso(out.to)}"]
        for c in out.currencies:
            lines.append(
                f"{c.currency}: liability {c.liability} (held {c.held}); credited "
                f"{c.total_credited}, debited {c.total_debited} ({c.entries} entries)"
            )
            for kind, amounts in (("credited", c.credited), ("debited", c.debited)):
                for event_type, amount in amounts.items():
                    lines.append(f"  {kind:<9} {event_type:<20} {amount:>14}")
            lines.append(
                f"  expired   paid {c.expired.paid} promotional {c.expired.promotional}; "
                f"unbilled usage {c.unbilled_usage}, pending usage {c.pending_usage}"
            )
        return "\n".join(lines)

    if as_json:
        click.echo(json.dumps(out.model_dump(mode="json", by_alias=True), indent=2))
    else:
        click.echo(text())


@click.command("export")
@click.argument("customer_id")
@click.option("--currency", help="Only this wallet (default: every wallet of the customer).")
@click.option("--from", "start", help="Start (inclusive): 2026-12-01 or RFC 3339.")
@click.option("--to", "end", help="End (exclusive); default: now.")
@tz_option
@click.option(
    "--format", "fmt", type=click.Choice(export.FORMATS), default="csv", show_default=True
)
def ledger_export(
    customer_id: str,
    currency: str | None,
    start: str | None,
    end: str | None,
    tz: str | None,
    fmt: str,
) -> None:
    """Every entry of CUSTOMER_ID in the period, oldest first, as CSV (a header row) or
    NDJSON on stdout: `billing-worker ledger export cus_... > file.csv`."""
    zone = periods.zone(tz)
    begins = parse_local(start, "from")
    ends = parse_local(end, "to")
    moments = [
        None if m is None else periods.resolve(m, zone, f)
        for m, f in ((begins, "from"), (ends, "to"))
    ]
    if moments[0] is not None and moments[1] is not None:
        periods.period(moments[0], moments[1])  # from after to: refused, naming it
    out = sys.stdout  # looked up now: a caller may have redirected it
    with session() as s:
        parts = export.spans(s, customer_id, currency, moments[0], moments[1])
        for chunk in export.chunks(s, customer_id, parts, fmt):
            out.write(chunk)
    out.flush()
