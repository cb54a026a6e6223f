"""Operator commands for the ledger: schema, customers, wallets, entries, verification."""

from __future__ import annotations

import click
from alembic.util import CommandError

from worker import ledger
from worker.cli.common import (
    AMOUNT_COMMAND,
    CLI_ACTOR,
    emit,
    json_option,
    parse_amount,
    parse_expiry,
    session,
)
from worker.errors import IdempotencyKeyReused
from worker.infra import migrate
from worker.ledger import credit_terms
from worker.ledger.lot_schemas import wallet_list
from worker.ledger.schemas import (
    CustomerOut,
    LedgerEntryListOut,
    LedgerEntryOut,
    WalletListOut,
    WalletOut,
    iso,
)
from worker.models import LOT_CATEGORIES


@click.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Apply migrations up to REVISION."""
    try:
        migrate.upgrade(revision=revision)
    except CommandError as exc:
        raise click.ClickException(_first_line(exc)) from None
    click.echo(f"database at {revision}")


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


@db.command("downgrade")
@click.argument("revision", required=False)
@click.option("--revision", "revision_option", help="The same as REVISION.")
@click.option(
    "--drop-ledger",
    is_flag=True,
    help="Allow a downgrade past the migration that creates the ledger to destroy its entries.",
)
def db_downgrade(revision: str | None, revision_option: str | None, drop_ledger: bool) -> None:
    """Revert migrations down to REVISION (a revision id, or base).

    There is no default: a downgrade always names where it goes. One past the migration that
    creates the ledger is refused while it holds entries, unless --drop-ledger.
    """
    if revision and revision_option and revision != revision_option:
        raise click.UsageError("REVISION and --revision differ; name one revision")
    target = revision or revision_option
    if not target:
        raise click.UsageError(
            "db downgrade needs the revision to go down to, e.g. 'billing-worker db downgrade"
            " 0009' ('base' removes every table)"
        )
    try:
        migrate.downgrade(revision=target, drop_ledger=drop_ledger)
    except (migrate.DowngradeRefused, CommandError) as exc:
        raise click.ClickException(_first_line(exc)) from None
    click.echo(f"database at {target}")


@click.group()
def customers() -> None:
    """Customers (each gets one wallet per configured currency)."""


@customers.command("create")
@click.option("--email", required=True)
@click.option("--name", required=True)
@click.option("--phone-number")
@json_option
def customers_create(email: str, name: str, phone_number: str | None, as_json: bool) -> None:
    """Create a customer, or show the existing one with that email."""
    with session() as s:
        customer, created = ledger.create_customer(
            s, email=email, name=name, phone_number=phone_number, actor=CLI_ACTOR
        )
        out = CustomerOut.of(customer)
    verb = "created" if created else "exists"
    emit(out, as_json, lambda: f"{verb} {out.customer_id} <{out.email}> {out.name}")


@click.group()
def wallet() -> None:
    """Wallet balances and manual adjustments."""


def _wallet_text(out: WalletListOut) -> str:
    lines = []
    for w in out.items:
        line = f"{w.currency} {w.balance:>15}  pending_usage {w.pending_usage}"
        if w.held_balance:
            line += f"  held {w.held_balance}  available {w.available_balance}"
        if w.next_expiry_at is not None:  # only wallets holding credit that expires
            line += f"  expiring_soon {w.expiring_soon}  next_expiry {iso(w.next_expiry_at)}"
        lines.append(line)
    return "\n".join([*lines, f"total_balance_usd {out.total_balance_usd}"])


@wallet.command("show")
@click.argument("customer_id")
@json_option
def wallet_show(customer_id: str, as_json: bool) -> None:
    """Balances of every wallet of CUSTOMER_ID (minor units), and what expires soon."""
    with session() as s:
        out = wallet_list(s, customer_id)
    emit(out, as_json, lambda: _wallet_text(out))


def _lot_options(command):  # type: ignore[no-untyped-def]
    """The credit's lot terms. ``wallet debit`` takes them too, so that the ledger refuses them
    naming the field, as the API does, instead of click calling them extra arguments."""
    command = click.option(
        "--category",
        type=click.Choice(LOT_CATEGORIES),
        help="Credits only. The credit's lot: paid (the default) or promotional (spent first "
        "among lots expiring together).",
    )(command)
    command = click.option(
        "--expires-in",
        metavar="DURATION",
        help="Credits only. The credit expires this long from now: 30d, 12h or 90m.",
    )(command)
    return click.option(
        "--expires-at",
        metavar="RFC3339",
        help="Credits only. The credit expires then, e.g. 2027-01-31T00:00:00Z (an offset is "
        "required).",
    )(command)


def _adjust(is_credit: bool):  # type: ignore[no-untyped-def]
    @click.argument("customer_id")
    @click.argument("amount")
    @click.option("--currency", required=True, help="e.g. USD")
    @click.option("--reason")
    @click.option("--idempotency-key")
    @json_option
    def command(
        customer_id: str,
        amount: str,
        currency: str,
        reason: str | None,
        idempotency_key: str | None,
        as_json: bool,
        expires_at: str | None,
        expires_in: str | None,
        category: str | None,
    ) -> None:
        leg = ledger.Leg(
            customer_id=customer_id,
            currency=currency,
            amount=parse_amount(amount),
            is_credit=is_credit,
            reason=reason,
            key=ledger.client_key(idempotency_key),
            category=credit_terms.leg_category(category, is_credit=is_credit),
            expires_at=parse_expiry(expires_at, expires_in),
            actor=CLI_ACTOR,
        )
        with session() as s:
            try:
                posted = ledger.post(s, [leg])[0]
            except IdempotencyKeyReused as reused:
                raise credit_terms.with_lot_terms(s, reused, leg) from None
            assert isinstance(posted, ledger.Posted)
            out = WalletOut.of(posted.wallet)
            entry_id = posted.entry.id
        emit(out, as_json, lambda: f"{entry_id}: {out.currency} balance {out.balance}")

    return _lot_options(command)


wallet.command(
    "credit",
    context_settings=AMOUNT_COMMAND,
    help="Add AMOUNT minor units to CUSTOMER_ID's wallet, optionally as credit that expires "
    "(--expires-at or --expires-in) or is promotional (--category).",
)(_adjust(True))
wallet.command(
    "debit",
    context_settings=AMOUNT_COMMAND,
    help="Take AMOUNT minor units from CUSTOMER_ID's wallet.",
)(_adjust(False))


@click.group("ledger")
def ledger_group() -> None:
    """Ledger entries."""


@ledger_group.command("list")
@click.argument("customer_id")
@click.option("--currency")
@click.option("--page-number", type=int, default=0, show_default=True)
@click.option("--page-size", type=int, default=10, show_default=True)
@json_option
def ledger_list(
    customer_id: str, currency: str | None, page_number: int, page_size: int, as_json: bool
) -> None:
    """CUSTOMER_ID's entries, newest first."""
    with session() as s:
        entries = ledger.list_entries(
            s, customer_id, currency=currency, page_number=page_number, page_size=page_size
        )
        out = LedgerEntryListOut(items=[LedgerEntryOut.of(e) for e in entries])

    def text() -> str:
        return (
            "\n".join(
                f"{e.created_at:%Y-%m-%d %H:%M:%S} {e.id} {'+' if e.is_credit else '-'}{e.amount} "
                f"{e.currency} -> {e.after_balance} {e.event_type} by {e.actor} "
                f"{e.reason or ''}".rstrip()
                for e in out.items
            )
            or "no entries"
        )

    emit(out, as_json, text)


@click.command()
@json_option
def verify(as_json: bool) -> None:
    """Check every wallet against its ledger; exit 1 on any drift."""
    with session() as s:
        report = ledger.verify(s)
    data = {
        "ok": report.ok,
        "wallets": report.wallets,
        "entries": report.entries,
        "problems": report.problems,
    }
    emit(
        data,
        as_json,
        lambda: "\n".join(
            [
                *report.problems,
                f"{'OK' if report.ok else 'DRIFT'}: {report.wallets} wallets, "
                f"{report.entries} entries, {len(report.problems)} problem(s)",
            ]
        ),
    )
    if not report.ok:
        raise SystemExit(1)
