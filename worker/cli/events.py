"""``billing-worker events ...``: the provider webhook inbox."""

from __future__ import annotations

import json
from typing import Any

import click

from worker import inbox
from worker.access import audit
from worker.cli.common import CLI_ACTOR, json_option, session
from worker.models import InboxEvent


def _as_dict(event: InboxEvent, full: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": event.id,
        "provider": event.provider,
        "provider_event_id": event.provider_event_id,
        "event_type": event.event_type,
        "status": event.status,
        "attempts": event.attempts,
        "error": event.error,
        "received_at": event.received_at.isoformat(),
        "processed_at": event.processed_at.isoformat() if event.processed_at else None,
    }
    if full:
        data["result"] = event.result
        data["payload"] = event.payload
    return data


@click.group()
def events() -> None:
    """The provider webhook inbox: list, inspect and replay stored events."""


@events.command("list")
@click.option("--status", type=click.Choice(inbox.STATUSES))
@click.option("--provider", type=click.Choice(inbox.PROVIDERS))
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@json_option
def list_events(status: str | None, provider: str | None, limit: int, as_json: bool) -> None:
    """Newest first."""
    with session() as s:
        found = inbox.list_events(s, status=status, provider=provider, limit=limit)
        rows = [_as_dict(e) for e in found]
    if as_json:
        click.echo(json.dumps({"items": rows}, indent=2))
        return
    for row in rows:
        line = (
            f"{row['id']:>8}  {row['provider']:<6}  {row['status']:<9}  "
            f"{row['event_type']:<28}  {row['provider_event_id']}  attempts={row['attempts']}"
        )
        if row["error"]:
            line += f"  error={row['error']}"
        click.echo(line)


@events.command("show")
@click.argument("event_id", type=int)
def show_event(event_id: int) -> None:
    """One event with its payload, result and error (JSON)."""
    with session() as s:
        data = _as_dict(inbox.get_event(s, event_id), full=True)
    click.echo(json.dumps(data, indent=2))


@events.command("replay")
@click.argument("event_id", type=int)
def replay_event(event_id: int) -> None:
    """Re-run a failed or ignored event now, in this process. Still exactly-once: its ledger
    effects carry business idempotency keys."""
    with session() as s:
        was = inbox.get_event(s, event_id).status
        event = inbox.reset_for_replay(s, event_id)
        audit.record(
            s,
            CLI_ACTOR,
            "inbox.replayed",
            str(event_id),
            {"provider": event.provider, "event_type": event.event_type, "was": was},
        )
    with session() as s:
        outcome = inbox.process_event(s, event_id)
    with session() as s:
        event = inbox.get_event(s, event_id)
        detail = event.error if event.status == "failed" or outcome.waiting else event.result
    click.echo(f"event {event_id}: {event.status}" + (f" ({detail})" if detail else ""))
