"""``billing-worker usage``: list stored usage events, bill pending ones, settle unbilled usage."""

from __future__ import annotations

import click

from worker import usage
from worker.cli.common import emit, json_option, session
from worker.infra.db import settings_of
from worker.usage.schemas import UsageEventListOut, UsageEventOut


@click.group("usage")
def usage_group() -> None:
    """Usage events and their billing."""


@usage_group.command("list")
@click.option("--status", type=click.Choice(usage.STATUSES))
@click.option("--customer", "customer_id")
@click.option("--event-name")
@click.option("--page-number", type=int, default=0, show_default=True)
@click.option("--page-size", type=int, default=20, show_default=True)
@json_option
def usage_list(
    status: str | None,
    customer_id: str | None,
    event_name: str | None,
    page_number: int,
    page_size: int,
    as_json: bool,
) -> None:
    """Stored events, newest first (``--status unbilled``: usage still owed)."""
    with session() as s:
        events = usage.list_events(
            s,
            customer_id=customer_id,
            event_name=event_name,
            status=status,
            page_number=page_number,
            page_size=page_size,
        )
        business_id = settings_of(s).business_id
        out = UsageEventListOut(items=[UsageEventOut.of(e, business_id) for e in events])

    def text() -> str:
        lines = []
        for e in out.items:
            cost = f"{e.cost} {e.currency}" if e.cost is not None else "-"
            owed = f" unbilled {e.unbilled_amount}" if e.unbilled_amount else ""
            error = f" ({e.error})" if e.error else ""
            lines.append(
                f"{e.timestamp:%Y-%m-%d %H:%M:%S} {e.event_id} {e.customer_id} {e.event_name} "
                f"{e.status} cost {cost}{owed}{error}"
            )
        return "\n".join(lines) or "no events"

    emit(out, as_json, text)


@usage_group.command("settle")
@click.argument("customer_id", required=False)
@json_option
def usage_settle(customer_id: str | None, as_json: bool) -> None:
    """Debit unbilled usage (oldest first) from CUSTOMER_ID's wallets, or from every wallet."""
    with session() as s:
        results = usage.settle(s, customer_id)
    data = {
        "items": [
            {
                "customer_id": r.customer_id,
                "currency": r.currency,
                "debited": r.debited,
                "events_settled": r.events_settled,
                "still_unbilled": r.still_unbilled,
                "ledger_entry_id": r.entry_id,
            }
            for r in results
        ]
    }

    def text() -> str:
        return (
            "\n".join(
                f"{r.customer_id} {r.currency}: debited {r.debited}, "
                f"{r.events_settled} event(s) settled, {r.still_unbilled} still unbilled"
                for r in results
            )
            or "no unbilled usage"
        )

    emit(data, as_json, text)


@usage_group.command("bill")
@click.option("--batch-size", type=click.IntRange(1, 100_000), default=usage.BATCH_SIZE)
def usage_bill(batch_size: int) -> None:
    """Bill pending events now, in this process (what the worker does)."""
    total = 0
    while True:
        with session() as s:
            result = usage.bill_batch(s, limit=batch_size)
        total += result.events
        if result.events < batch_size:
            break
    click.echo(f"billed {total} event(s)")
