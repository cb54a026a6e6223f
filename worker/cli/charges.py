"""``billing-worker wallet charge|reverse|refund|charge-show``: wallet-first checkout by hand.

Each prints the JSON the HTTP API returns with ``--json``. A replayed request (same key)
prints the original result and says so in the text form.
"""

from __future__ import annotations

import click

from worker import charges
from worker.charges.schemas import ChargeOut, RefundOut, ReversalOut
from worker.cli.common import (
    AMOUNT_COMMAND,
    CLI_ACTOR,
    emit,
    json_option,
    parse_amount,
    session,
)


def _charge_text(out: ChargeOut, replayed: bool) -> str:
    return (
        f"{'replayed ' if replayed else ''}{out.charge_id} order {out.order_id}: "
        f"applied {out.applied_amount} {out.currency}, remaining {out.remaining_amount}, "
        f"reversed {out.reversed_amount}; wallet balance {out.wallet.balance}"
    )


@click.command("charge", context_settings=AMOUNT_COMMAND)
@click.argument("customer_id")
@click.argument("amount")
@click.option("--currency", required=True, help="e.g. USD")
@click.option("--order-id", required=True, help="Your order; default key charge:ORDER_ID.")
@click.option("--idempotency-key")
@click.option("--reason")
@click.option(
    "--partial/--no-partial",
    default=True,
    show_default=True,
    help="--no-partial: the whole AMOUNT or nothing.",
)
@json_option
def charge(
    customer_id: str,
    amount: str,
    currency: str,
    order_id: str,
    idempotency_key: str | None,
    reason: str | None,
    partial: bool,
    as_json: bool,
) -> None:
    """Pay up to AMOUNT of an order from CUSTOMER_ID's wallet."""
    with session() as s:
        view = charges.charge(
            s,
            customer_id,
            amount=parse_amount(amount),
            currency=currency,
            order_id=order_id,
            idempotency_key=idempotency_key,
            reason=reason,
            allow_partial=partial,
            actor=CLI_ACTOR,
        )
        out = ChargeOut.of(view)
    emit(out, as_json, lambda: _charge_text(out, view.replayed))


@click.command("reverse")
@click.argument("customer_id")
@click.argument("charge_id")
@click.option("--amount", help="Minor units to give back; default: all that is left.")
@click.option("--reason")
@click.option("--idempotency-key", help="Makes a partial reversal safe to retry.")
@json_option
def reverse(
    customer_id: str,
    charge_id: str,
    amount: str | None,
    reason: str | None,
    idempotency_key: str | None,
    as_json: bool,
) -> None:
    """Give the wallet part of CHARGE_ID back to CUSTOMER_ID (never more than is left)."""
    with session() as s:
        reversal = charges.reverse(
            s,
            customer_id,
            charge_id,
            amount=None if amount is None else parse_amount(amount),
            reason=reason,
            idempotency_key=idempotency_key,
            actor=CLI_ACTOR,
        )
        out = ReversalOut.of_reversal(reversal)
    prefix = "replayed: " if reversal.replayed else ""
    emit(
        out,
        as_json,
        lambda: f"{prefix}reversed {out.reversed_now} now; " + _charge_text(out, False),
    )


@click.command("refund", context_settings=AMOUNT_COMMAND)
@click.argument("customer_id")
@click.argument("amount")
@click.option("--currency", required=True, help="e.g. USD")
@click.option("--payment-id", required=True, help="The payment refunded.")
@click.option("--refund-id", help="Credited once per refund id (default: payment id + amount).")
@click.option("--reason")
@json_option
def refund(
    customer_id: str,
    amount: str,
    currency: str,
    payment_id: str,
    refund_id: str | None,
    reason: str | None,
    as_json: bool,
) -> None:
    """Refund AMOUNT of a payment to CUSTOMER_ID's wallet as credit."""
    with session() as s:
        result = charges.refund_to_wallet(
            s,
            customer_id,
            amount=parse_amount(amount),
            currency=currency,
            payment_id=payment_id,
            refund_id=refund_id,
            reason=reason,
            actor=CLI_ACTOR,
        )
        out = RefundOut.of(result)
    emit(
        out,
        as_json,
        lambda: (
            f"{'replayed ' if result.replayed else ''}{out.entry.id}: refunded {out.amount} "
            f"{out.currency} of {out.payment_id}; wallet balance {out.wallet.balance}"
        ),
    )


@click.command("charge-show")
@click.argument("customer_id")
@click.argument("charge_id")
@json_option
def charge_show(customer_id: str, charge_id: str, as_json: bool) -> None:
    """Show CHARGE_ID: applied, reversed and remaining amounts, and its entries."""
    with session() as s:
        out = ChargeOut.of(charges.get_charge(s, customer_id, charge_id))

    def text() -> str:
        lines = [_charge_text(out, False)]
        for e in out.entries:
            sign = "+" if e.is_credit else "-"
            lines.append(f"  {e.id} {sign}{e.amount} {e.event_type} {e.reason or ''}".rstrip())
        return "\n".join(lines)

    emit(out, as_json, text)


# Added to the ``wallet`` group by worker.cli.
COMMANDS = (charge, reverse, refund, charge_show)
