"""``billing-worker endpoints | notifications | tasks`` and ``customers set-threshold``."""

from __future__ import annotations

import json

import click

from tasks import beat as schedule
from worker import ledger, notify
from worker.access import audit
from worker.cli.common import CLI_ACTOR, emit, json_option, session
from worker.cli.core import customers
from worker.config import get_settings
from worker.errors import ValidationFailed
from worker.ledger.schemas import iso

# -- endpoints -----------------------------------------------------------------------------


@click.group()
def endpoints() -> None:
    """Webhook endpoints that receive signed notifications."""


@endpoints.command("add")
@click.argument("url")
@click.option(
    "--events",
    default="*",
    show_default=True,
    help=f"Comma-separated event types, or * for all: {', '.join(notify.EVENT_TYPES)}.",
)
@json_option
def endpoints_add(url: str, events: str, as_json: bool) -> None:
    """Register URL; prints its signing secret (shown this once only)."""
    with session() as s:
        endpoint = notify.add_endpoint(s, url, events)
        audit.record(
            s, CLI_ACTOR, "endpoint.created", endpoint.id, {"url": url, "events": endpoint.events}
        )
        data = {
            "id": endpoint.id,
            "url": endpoint.url,
            "events": endpoint.events,
            "secret": notify.endpoint_secret(get_settings(), endpoint),
        }
    emit(
        data,
        as_json,
        lambda: (
            f"{data['id']} {data['url']} events={data['events']}\n"
            f"secret {data['secret']}\n(store the secret now: it is not shown again)"
        ),
    )


@endpoints.command("list")
@json_option
def endpoints_list(as_json: bool) -> None:
    """List endpoints (never their secrets)."""
    with session() as s:
        rows = [
            {"id": e.id, "url": e.url, "events": e.events, "enabled": e.enabled}
            for e in notify.list_endpoints(s)
        ]
    emit(
        {"items": rows},
        as_json,
        lambda: (
            "\n".join(
                f"{r['id']} {r['url']} events={r['events']} "
                + ("enabled" if r["enabled"] else "removed")
                for r in rows
            )
            or "no endpoints"
        ),
    )


@endpoints.command("seal-secrets")
def endpoints_seal_secrets() -> None:
    """Encrypt every endpoint secret under the first ENDPOINT_SECRET_KEY (after setting it,
    or after putting a new key first to rotate)."""
    with session() as s:
        changed = notify.seal_secrets(s)
    click.echo(f"{changed} endpoint secret(s) sealed under the first ENDPOINT_SECRET_KEY")


@endpoints.command("remove")
@click.argument("endpoint_id")
def endpoints_remove(endpoint_id: str) -> None:
    """Stop sending to ENDPOINT_ID (its undelivered messages fail)."""
    with session() as s:
        notify.remove_endpoint(s, endpoint_id)
        audit.record(s, CLI_ACTOR, "endpoint.removed", endpoint_id)
    click.echo(f"removed {endpoint_id}")


# -- notifications -------------------------------------------------------------------------


@click.group()
def notifications() -> None:
    """The notification outbox and its delivery log."""


@notifications.command("list")
@click.option("--status", type=click.Choice(["pending", "delivered", "failed"]))
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@json_option
def notifications_list(status: str | None, limit: int, as_json: bool) -> None:
    """Newest notifications first, with their latest delivery attempt."""
    with session() as s:
        rows = []
        for m in notify.list_messages(s, status, limit):
            attempts = notify.attempts_of(s, m.id)
            last = attempts[-1] if attempts else None
            rows.append(
                {
                    "id": m.id,
                    "event_type": m.event_type,
                    "channel": m.channel,
                    "endpoint_id": m.endpoint_id,
                    "status": m.status,
                    "attempts": len(attempts),
                    "next_attempt_at": iso(m.next_attempt_at) if m.status == "pending" else None,
                    "last_status_code": last.status_code if last else None,
                    "last_error": m.last_error,
                    "created_at": iso(m.created_at),
                    "data": m.payload.get("data"),
                }
            )
    emit(
        {"items": rows},
        as_json,
        lambda: (
            "\n".join(
                f"{r['id']} {r['event_type']:<28} {r['status']:<9} attempts={r['attempts']}"
                f" {r['channel']}:{r['endpoint_id'] or 'default'}"
                + (f" last_error={r['last_error']!r}" if r["last_error"] else "")
                for r in rows
            )
            or "no notifications"
        ),
    )


@notifications.command("resend")
@click.argument("message_id")
def notifications_resend(message_id: str) -> None:
    """Queue MESSAGE_ID again (same webhook-id) and attempt it now."""
    with session() as s:
        notify.resend(s, message_id)
    outcome = notify.deliver(get_settings(), message_id)
    detail = f" (HTTP {outcome.status_code})" if outcome.status_code else ""
    error = f": {outcome.error}" if outcome.error else ""
    click.echo(f"{message_id} {outcome.status}{detail}{error}")


# -- tasks ---------------------------------------------------------------------------------


@click.group()
def tasks() -> None:
    """Beat's periodic tasks, run on demand."""


@tasks.command("list")
@json_option
def tasks_list(as_json: bool) -> None:
    """Every periodic task: name, Celery task and interval."""
    settings = get_settings()
    rows = [
        {
            "name": t.name,
            "task": t.task,
            "every_seconds": t.every(settings),
            "description": t.description,
        }
        for t in schedule.REGISTRY.values()
    ]
    emit(
        {"items": rows},
        as_json,
        lambda: "\n".join(
            f"{r['name']:<24} every {r['every_seconds']:>6}s  {r['task']}  {r['description']}"
            for r in rows
        ),
    )


@tasks.command("run")
@click.argument("name")
@click.option("--sync", is_flag=True, help="Run here and now instead of enqueueing it.")
def tasks_run(name: str, sync: bool) -> None:
    """Run periodic task NAME (see `tasks list`) via the worker, or inline with --sync."""
    task = schedule.lookup(name)
    if task is None:
        known = ", ".join(schedule.REGISTRY)
        raise click.ClickException(f"unknown task {name!r}; known: {known}")
    if sync:
        result = task.run_sync(get_settings())
        # After the run: a task's own transactions commit as it goes, so there is no single
        # transaction to record it in; a run that raised is not recorded.
        with session() as s:
            audit.record(s, CLI_ACTOR, "task.run", task.name, {"via": "cli", "sync": True})
        click.echo(json.dumps(result))
        return
    from worker.infra.celery_app import app

    sent = app.send_task(task.task, retry=False)
    with session() as s:
        audit.record(s, CLI_ACTOR, "task.triggered", task.name, {"task_id": sent.id, "via": "cli"})
    click.echo(f"enqueued {task.task} id={sent.id}")


# -- customers set-threshold ---------------------------------------------------------------


@customers.command("set-threshold")
@click.argument("customer_id")
@click.argument("currency")
@click.argument("amount", required=False)
@click.option("--clear", is_flag=True, help="Remove the override (use LOW_BALANCE_THRESHOLDS).")
def set_threshold(customer_id: str, currency: str, amount: str | None, clear: bool) -> None:
    """Override CUSTOMER_ID's low-balance threshold for CURRENCY (AMOUNT minor units)."""
    if clear == (amount is not None):
        raise click.UsageError("give either AMOUNT or --clear")
    if amount is not None and not amount.strip().isdigit():
        raise ValidationFailed("amount", f"must be a whole number of minor units, got {amount!r}")
    with session() as s:
        code = ledger.validate_currency(s, currency)
        current = dict(ledger.get_customer(s, customer_id).low_balance_thresholds or {})
        if clear:
            current.pop(code, None)
        else:
            current[code] = int(amount or 0)
        ledger.update_customer(
            s, customer_id, actor=CLI_ACTOR, low_balance_thresholds=current or None
        )
        audit.record(
            s,
            CLI_ACTOR,
            "customer.threshold_set",
            customer_id,
            {"currency": code, "threshold": None if clear else int(amount or 0)},
        )
    shown = "cleared" if clear else amount
    click.echo(f"{customer_id} {code} low-balance threshold {shown}")
