"""Wallets: one integer balance per customer and currency, read here and locked for posting."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from worker.errors import CustomerNotFound
from worker.infra.db import settings_of
from worker.ledger import pg
from worker.ledger.customers import ensure_wallets, get_customer
from worker.ledger.validation import validate_currency
from worker.models import Customer, Wallet
from worker.money import floor_cents, to_usd_cents


def get_wallets(session: Session, customer_id: str) -> list[Wallet]:
    """The customer's wallets, one per configured currency, in configuration order."""
    currencies = settings_of(session).wallet_currencies
    wallets = _wallets_of(session, customer_id)
    if {w.currency for w in wallets} < set(currencies):
        get_customer(session, customer_id)
        ensure_wallets(session, customer_id)
        wallets = _wallets_of(session, customer_id)
    elif not wallets:
        raise CustomerNotFound(customer_id)
    order = {c: i for i, c in enumerate(currencies)}
    return sorted((w for w in wallets if w.currency in order), key=lambda w: order[w.currency])


def _wallets_of(session: Session, customer_id: str) -> list[Wallet]:
    return list(session.scalars(select(Wallet).where(Wallet.customer_id == customer_id)))


def get_wallet(session: Session, customer_id: str, currency: str) -> Wallet:
    currency = validate_currency(session, currency)
    for wallet in get_wallets(session, customer_id):
        if wallet.currency == currency:
            return wallet
    raise CustomerNotFound(customer_id)  # unreachable: get_wallets covers every currency


def total_balance_usd(session: Session, wallets: list[Wallet]) -> int:
    """Sum of the wallets in USD cents at the configured rates, rounded down once."""
    rates = settings_of(session).fx_rates_to_usd
    total = sum(
        (
            to_usd_cents(w.balance, w.currency, rates[w.currency])
            for w in wallets
            if w.currency in rates
        ),
        start=to_usd_cents(0, "USD", rates["USD"]),
    )
    return floor_cents(total)


class LockedWallet(NamedTuple):
    """A wallet row as ``lock_wallets`` read it, under this transaction's row lock."""

    customer_id: str
    currency: str
    balance: int
    pending_usage_scaled: int
    low_state: str
    created_at: datetime
    low_balance_thresholds: Any  # the customer's overrides (JSON), or None
    held: int = 0  # the sum of its active holds (worker.ledger.holds)
    depleted: bool = True

    @property
    def available(self) -> int:
        """What debits may spend (at most: expired lots not yet taken count in the balance)."""
        return max(self.balance - self.held, 0)


def lock_wallets(
    session: Session, keys: list[tuple[str, str]]
) -> dict[tuple[str, str], LockedWallet]:
    """Lock the wallets ``keys`` (``(customer_id, currency)``) in one statement, in key order.

    One fixed order for every caller means two transactions whose batches share wallets queue
    on each other instead of deadlocking (SQLite's BEGIN IMMEDIATE already serialises
    writers). A wallet that does not exist yet (a currency configured after its customer was
    created) is created first; an unknown customer raises ``CustomerNotFound``. Returns plain
    rows, not ORM objects: a batch of a thousand wallets costs one statement and no
    identity-map work.
    """
    keys = sorted(set(keys))

    def fetch() -> dict[tuple[str, str], LockedWallet]:
        if postgres:
            rows = session.execute(
                pg.LOCK_WALLETS,
                {"wallets": pg.rows_json([{"customer_id": c, "currency": cur} for c, cur in keys])},
            )
            return {(r[0], r[1]): LockedWallet(*r) for r in rows}
        rows = session.execute(
            select(
                Wallet.customer_id,
                Wallet.currency,
                Wallet.balance,
                Wallet.pending_usage_scaled,
                Wallet.low_state,
                Wallet.created_at,
                Customer.low_balance_thresholds,
                Wallet.held,
                Wallet.depleted,
            )
            .join(Customer, Customer.customer_id == Wallet.customer_id)
            .where(tuple_(Wallet.customer_id, Wallet.currency).in_(keys))
            .order_by(Wallet.customer_id, Wallet.currency)
            .with_for_update(of=Wallet)
        )
        return {(r[0], r[1]): LockedWallet(*r) for r in rows}

    if not keys:
        return {}
    postgres = session.get_bind().dialect.name == "postgresql"
    locked = fetch()
    missing = sorted({k[0] for k in keys if k not in locked})
    if missing:
        for customer_id in missing:
            get_customer(session, customer_id)
            ensure_wallets(session, customer_id)
        locked = fetch()
    return locked


def wallet_columns(row: LockedWallet, updated_at: datetime) -> dict[str, Any]:
    """A ``Wallet``'s column values from a locked row, as a posting left it."""
    return {
        "customer_id": row.customer_id,
        "currency": row.currency,
        "balance": row.balance,
        "pending_usage_scaled": row.pending_usage_scaled,
        "low_state": row.low_state,
        "held": row.held,
        "depleted": row.depleted,
        "created_at": row.created_at,
        "updated_at": updated_at,
    }
