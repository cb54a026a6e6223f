"""``billing-worker apikeys``: create, list and revoke API keys."""

from __future__ import annotations

import click

from worker.access import apikeys as core
from worker.access.schemas import ApiKeyOut
from worker.access.scopes import ADMIN, DEFAULT_SCOPES, SCOPES, ordered
from worker.cli.common import CLI_ACTOR, emit, json_option, parse_amount, session


@click.group()
def apikeys() -> None:
    """API keys for the HTTP API (Authorization: Bearer KEY)."""


@apikeys.command("create")
@click.option("--name", help="A label to recognise the key by.")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    metavar="SCOPE",
    help=f"Repeatable: {', '.join(SCOPES)} (admin implies all). Default: "
    f"{', '.join(ordered(DEFAULT_SCOPES))} only.",
)
@click.option("--admin", is_flag=True, help="Shorthand for --scope admin.")
@click.option(
    "--max-credit",
    metavar="AMOUNT",
    help="The largest single credit the key may post, in minor units of its currency.",
)
@json_option
def create(
    name: str | None, scopes: tuple[str, ...], admin: bool, max_credit: str | None, as_json: bool
) -> None:
    """Create a key and print its secret (shown this once only)."""
    chosen = [*scopes, *([ADMIN] if admin else [])] or list(DEFAULT_SCOPES)
    limit = None if max_credit is None else parse_amount(max_credit, "max_credit")
    with session() as s:
        key, secret = core.create_key(
            s, name=name, scopes=chosen, max_credit=limit, actor=CLI_ACTOR
        )
        out = ApiKeyOut.of(key, core.scopes_of(s, [key.id])[key.id])
    data = {**out.model_dump(), "key": secret}
    emit(
        data,
        as_json,
        lambda: (
            f"{out.id}  {secret}\nscopes {','.join(out.scopes)}"
            + (f" max_credit {out.max_credit}" if out.max_credit else "")
            + "\n(store the key now: it is not shown again)"
        ),
    )


@apikeys.command("list")
@json_option
def list_(as_json: bool) -> None:
    """List keys with their scopes (never their secrets)."""
    with session() as s:
        keys = core.list_keys(s)
        scopes = core.scopes_of(s, [k.id for k in keys])
        rows = [ApiKeyOut.of(k, scopes[k.id]) for k in keys]
    emit(
        {"items": [r.model_dump() for r in rows]},
        as_json,
        lambda: (
            "\n".join(
                f"{r.id} {r.name or '-'} {','.join(r.scopes)} "
                + (f"max_credit={r.max_credit} " if r.max_credit else "")
                + ("revoked" if r.revoked_at else "active")
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
        core.revoke_key(s, key_id, actor=CLI_ACTOR)
    click.echo(f"revoked {key_id}")
