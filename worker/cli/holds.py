"""``wallet hold|capture|release|holds``: reserve money on a wallet, capture or release it."""

from __future__ import annotations

import click

from worker.cli.common import AMOUNT_COMMAND, CLI_ACTOR, emit, json_option, parse_amount, session
from worker.ledger import holds
from worker.ledger.hold_schemas import HoldListOut, HoldOut
from worker.ledger.schemas import iso


def _text(out: HoldOut) -> str:
    line = f"{out.hold_id} {out.status} {out.currency} {out.amount}"
    if out.status == "captured":
        line += f" captured {out.captured_amount} ({out.ledger_entry_id})"
    if out.expires_at is not None and out.status == "active":
        line += f" expires {iso(out.expires_at)}"
    return line


@click.command("hold", context_settings=AMOUNT_COMMAND)
@click.argument("customer_id")
@click.argument("amount")
@click.option("--currency", required=True, help="e.g. USD")
@click.option("--reason")
@click.option("--idempotency-key")
@click.option(
    "--expires-in-seconds", type=int, help="How long it reserves (default HOLD_TTL_SECONDS)."
)
@json_option
def wallet_hold(
    customer_id: str,
    amount: str,
    currency: str,
    reason: str | None,
    idempotency_key: str | None,
    expires_in_seconds: int | None,
    as_json: bool,
) -> None:
    """Reserve AMOUNT minor units of CUSTOMER_ID's available balance."""
    with session() as s:
        outcome = holds.create_hold(
            s,
            customer_id=customer_id,
            currency=currency,
            amount=parse_amount(amount),
            idempotency_key=idempotency_key,
            reason=reason,
            expires_in_seconds=expires_in_seconds,
            actor=CLI_ACTOR,
        )
        assert outcome.hold is not None
        out = HoldOut.of(outcome.hold)
    emit(out, as_json, lambda: _text(out))


@click.command("capture")
@click.argument("customer_id")
@click.argument("hold_id")
@click.option("--amount", help="At most the hold (default: all of it).")
@json_option
def wallet_capture(customer_id: str, hold_id: str, amount: str | None, as_json: bool) -> None:
    """Capture HOLD_ID: debit AMOUNT (default the whole hold) and release the rest."""
    with session() as s:
        outcome = holds.capture_hold(
            s,
            customer_id=customer_id,
            hold_id=hold_id,
            amount=parse_amount(amount) if amount is not None else None,
            actor=CLI_ACTOR,
        )
        assert outcome.hold is not None
        out = HoldOut.of(outcome.hold)
    emit(out, as_json, lambda: _text(out))


@click.command("release")
@click.argument("customer_id")
@click.argument("hold_id")
@json_option
def wallet_release(customer_id: str, hold_id: str, as_json: bool) -> None:
    """Release all of HOLD_ID."""
    with session() as s:
        outcome = holds.release_hold(s, customer_id=customer_id, hold_id=hold_id, actor=CLI_ACTOR)
        assert outcome.hold is not None
        out = HoldOut.of(outcome.hold)
    emit(out, as_json, lambda: _text(out))


@click.command("holds")
@click.argument("customer_id")
@click.option("--status", help="active, captured, released or expired.")
@click.option("--currency")
@click.option("--page-number", type=int, default=0, show_default=True)
@click.option("--page-size", type=int, default=10, show_default=True)
@json_option
def wallet_holds(
    customer_id: str,
    status: str | None,
    currency: str | None,
    page_number: int,
    page_size: int,
    as_json: bool,
) -> None:
    """CUSTOMER_ID's holds, newest first."""
    with session() as s:
        found = holds.list_holds(
            s,
            customer_id,
            status=status,
            currency=currency,
            page_number=page_number,
            page_size=page_size,
        )
        out = HoldListOut(items=[HoldOut.of(h) for h in found])
    emit(out, as_json, lambda: "\n".join(_text(h) for h in out.items) or "no holds")


COMMANDS = (wallet_hold, wallet_capture, wallet_release, wallet_holds)
