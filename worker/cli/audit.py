"""``billing-worker audit list``: the audit log of operator actions, newest first."""

from __future__ import annotations

import click

from worker.access import audit as core
from worker.access.schemas import AuditEntryOut, AuditListOut
from worker.cli.common import emit, json_option, session
from worker.ledger.validation import MAX_PAGE_SIZE


@click.group()
def audit() -> None:
    """Who did what: keys created or revoked, endpoints changed, tasks run, events replayed."""


@audit.command("list")
@click.option("--limit", type=click.IntRange(1, MAX_PAGE_SIZE), default=50, show_default=True)
@click.option("--action", help="Only this action, e.g. apikey.created.")
@click.option("--actor", help="Only this actor: an API key id, bootstrap, cli, system.")
@json_option
def audit_list(limit: int, action: str | None, actor: str | None, as_json: bool) -> None:
    """Newest first."""
    with session() as s:
        entries = core.list_entries(s, action=action, actor=actor, page_size=limit)
        out = AuditListOut(items=[AuditEntryOut.of(e) for e in entries])
    emit(
        out,
        as_json,
        lambda: (
            "\n".join(
                f"{e.at} {e.actor:<16} {e.action:<20} {e.target or '-'}"
                + (f" {e.details}" if e.details else "")
                for e in out.items
            )
            or "no audit entries"
        ),
    )
