"""THE posting pipeline: every balance change in the system is a batch of legs posted here.

``post(session, legs)`` validates each leg once (``legs.prepare``), checks idempotency keys once
(``keys``), builds rows in one place (``legs.entry_row``) and picks one of two ways to write:

- **one statement** (PostgreSQL, a single credit, or a single debit that refuses a shortfall):
  for a credit the wallet's UPDATE and the INSERTs of the entry and its lot in one CTE
  (``pg.SINGLE``); for a debit the wallet's lock, then one CTE that takes its live lots in
  spending order and writes the wallet, the entry, the lots and the consumptions
  (``pg.DEBIT``). When it writes nothing, the transactional path decides why.
- **the transaction** (``transactional``): the legs' keys in one query, the wallets locked in
  (customer, currency) order, the debited wallets' first lots read, every leg judged against
  the locked balances and live lots (``lots``), one write.

Never commits: the caller owns the transaction, so an entry and its cause (an inbox row, a
usage batch, a charge) commit or roll back together. After each entry the commit hooks note
the wallet for the low-balance check before commit and the notifications after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from worker.config import Settings
from worker.errors import ValidationFailed
from worker.infra.db import settings_of
from worker.ledger import pg
from worker.ledger.keys import IdempotencyKey, client_key
from worker.ledger.legs import Leg, OnShort, Posted, Replayed, entry_row, prepare
from worker.ledger.transactional import Result, post_in_transaction, posted
from worker.ledger.wallets import LockedWallet
from worker.models import new_id, utcnow


def post(
    session: Session,
    legs: Sequence[Leg],
    *,
    savepoint: bool = True,
    duplicates: Literal["raise", "skip"] = "raise",
    locked: dict[tuple[str, str], LockedWallet] | None = None,
) -> list[Result]:
    """Post ``legs`` all or nothing; one result per leg, in order. Never commits.

    A result is ``Posted``, or None for a TAKE debit of an empty wallet (nothing written).
    Raises ``InsufficientBalance`` for a REFUSE debit beyond the balance and ``InvalidAmount``
    past the balance cap (nothing written, keys unused). A key already used raises
    ``DuplicateEntry`` (same parameters) or ``IdempotencyKeyReused`` (naming what differs);
    with ``duplicates="skip"`` the leg's result is ``Replayed`` instead and the other legs
    post, so one used key never stalls a batch.

    ``savepoint=False`` saves a keyed leg's SAVEPOINT and RELEASE round trips for a caller
    whose transaction holds nothing else that must survive: a concurrent transaction that
    wins the race for a key then surfaces as ``IntegrityError`` with the transaction aborted,
    and the caller rolls back and calls again in a new one, which answers as usual.
    ``locked``: wallets the caller already locked with ``lock_wallets`` in this transaction.
    """
    settings = settings_of(session)
    legs = [prepare(settings, leg) for leg in legs]
    keyed = [(leg.customer_id, leg.key) for leg in legs if leg.key is not None]
    if len(set(keyed)) != len(keyed):
        raise ValidationFailed("idempotency_key", "each leg of a posting needs its own key")
    if (
        len(legs) == 1
        and locked is None
        and one_statement(legs[0])
        and session.get_bind().dialect.name == "postgresql"
    ):
        posted = _one_statement(session, settings, legs[0], savepoint)
        if posted is not None:
            return [posted]
    return post_in_transaction(session, settings, legs, savepoint, duplicates, locked)


def post_entry(
    session: Session,
    *,
    customer_id: str,
    currency: str,
    amount: int,
    is_credit: bool,
    event_type: str = "merchant_adjustment",
    reason: str | None = None,
    idempotency_key: str | IdempotencyKey | None = None,
    reference_object_id: str | None = None,
    on_short: OnShort = OnShort.REFUSE,
    savepoint: bool = True,
    actor: str = "system",
) -> Posted | None:
    """``post`` of one leg; a plain string key is a client's (see ``keys``)."""
    leg = Leg(
        customer_id=customer_id,
        currency=currency,
        amount=amount,
        is_credit=is_credit,
        event_type=event_type,
        reason=reason,
        reference_object_id=reference_object_id,
        key=client_key(idempotency_key),
        on_short=on_short,
        actor=actor,
    )
    result = post(session, [leg], savepoint=savepoint)[0]
    assert not isinstance(result, Replayed)  # duplicates raise
    return result


# -- one statement -------------------------------------------------------------------------


def one_statement(leg: Leg) -> bool:
    """Whether PostgreSQL can post ``leg`` in one statement (``pg.SINGLE`` for a credit,
    ``pg.DEBIT`` after the wallet's lock for a debit that refuses a shortfall and names no
    lot); every other leg is judged in Python (``transactional``)."""
    return leg.is_credit or (leg.on_short is OnShort.REFUSE and leg.lot_id is None)


def statement_values(settings: Settings, leg: Leg) -> dict[str, Any]:
    """The one-statement path's parameters: the leg's row (before/after are computed by the
    statement from the balance it updates) and its signed amount."""
    values = entry_row(
        leg,
        entry_id=new_id("wle"),
        business_id=settings.business_id,
        before=0,
        amount=leg.amount,
        now=utcnow(),
    )
    values["delta"] = leg.delta
    # The credit's lot (the statement inserts it with the entry).
    values.update(lot_id=new_id("lot"), category=leg.category or "paid", expires_at=leg.expires_at)
    return values


_NOT_ENTRY = frozenset(("delta", "threshold", "lot_id", "category", "expires_at"))


def statement_result(row: Any, values: dict[str, Any]) -> tuple[dict[str, Any], LockedWallet]:
    """The entry's columns and the wallet after it, from the statement's one result row."""
    balance, pending_usage_scaled, low_state, created_at, seq, thresholds, held, depleted = row
    entry = {k: v for k, v in values.items() if k not in _NOT_ENTRY}
    entry.update(seq=seq, before_balance=balance - values["delta"], after_balance=balance)
    wallet = LockedWallet(
        values["customer_id"],
        values["currency"],
        balance,
        pending_usage_scaled,
        low_state,
        created_at,
        thresholds,
        held,
        depleted,
    )
    return entry, wallet


def _one_statement(
    session: Session, settings: Settings, leg: Leg, savepoint: bool
) -> Posted | None:
    values = statement_values(settings, leg)
    sql = (
        pg.SINGLE[(leg.key is not None, False)]
        if leg.is_credit
        else pg.DEBIT[(leg.key is not None, False)]
    )
    session.flush()  # the caller's pending changes go first, as autoflush would do
    if not leg.is_credit:
        # The debit reads the wallet's lots: only after this transaction holds its lock.
        session.connection().exec_driver_sql(pg.LOCK_ONE, values)
    if leg.key is not None and savepoint:
        try:
            # A concurrent request with the same key may commit between our NOT EXISTS and
            # our insert; the unique index then rejects ours, and the savepoint keeps the
            # caller's transaction usable: the transactional path answers with the winner.
            with session.begin_nested():
                row = session.connection().exec_driver_sql(sql, values).first()
        except IntegrityError:
            return None
    else:
        row = session.connection().exec_driver_sql(sql, values).first()
    if row is None:
        return None
    entry, wallet = statement_result(row, values)
    return posted(session, leg, entry, wallet, leg.amount)
