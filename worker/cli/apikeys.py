"""``billing-worker apikeys``: create, list and revoke API keys."""

from __future__ import annotations

import click

from worker.access import apikeys as core
from worker.cli.common import emit, json_option, session
from worker.ledger.schemas import iso


@click.group()
def apikeys() -> None:
    """API keys for the HTTP API (Authorization: Bearer KEY)."""


@apikeys.command("create")
@click.option("--name", help="A label to recognise the key by.")
@click.option("--admin", is_flag=True, help="Allow admin routes (POST /admin/tasks/...).")
@json_option
def create(name: str | None, admin: bool, as_json: bool) -> None:
    """Create a key and print its secret (shown this once only)."""
    with session() as s:
        key, secret = core.create_key(s, name=name, admin=admin)
        data = {"id": key.id, "name": key.name, "admin": key.is_admin, "key": secret}
    emit(
        data, as_json, lambda: f"{data['id']}  {secret}\n(store the key now: it is not shown again)"
    )


@apikeys.command("list")
@json_option
def list_(as_json: bool) -> None:
    """List keys (never their secrets)."""
    with session() as s:
        rows = [
            {
                "id": k.id,
                "name": k.name,
                "admin": k.is_admin,
                "created_at": iso(k.created_at),
                "revoked_at": iso(k.revoked_at) if k.revoked_at else None,
            }
            for k in core.list_keys(s)
        ]
    emit(
        {"items": rows},
        as_json,
        lambda: (
            "\n".join(
                f"{r['id']} {r['name'] or '-'} {'admin ' if r['admin'] else ''}"
                f"{'revoked' if r['revoked_at'] else 'active'}"
                for r in rows
            )
            or "no keys"
        ),
    )


@apikeys.command("revoke")
@click.argument("key_id")
def revoke(key_id: str) -> None:
    """Revoke KEY_ID; requests using it get 401 within 5 seconds (web workers' key cache)."""
    with session() as s:
        core.revoke_key(s, key_id)
    click.echo(f"revoked {key_id}")
