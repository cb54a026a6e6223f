"""THE posting pipeline: every balance change in the system is a batch of legs posted here.

``post(session, legs)`` validates each leg once (``legs.prepare``), checks idempotency keys once
(``keys``), builds rows in one place (``legs.entry_row``) and picks one of two ways to write:

- **one statement** (PostgreSQL, a single leg that refuses a shortfall): the conditional
  UPDATE and the INSERT in one CTE (``pg.single``), the usual ledger-entries call and payment
  credit. When it writes nothing, the transactional path decides why.
- **the transaction**: look up the legs' keys in one query; lock the wallets in one statement
  in (customer, currency) order, so two batches never deadlock; judge every leg against the
  locked balances in Python (refuse, take what is there, or the balance cap); write every
  wallet and entry in one statement (PostgreSQL) or two (SQLite).

Never commits: the caller owns the transaction, so an entry and its cause (an inbox row, a
usage batch, a charge) commit or roll back together. After each entry the commit hooks note
the wallet for the low-balance check before commit and the notifications after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from sqlalchemy import bindparam, insert, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from worker.config import Settings
from worker.errors import DuplicateEntry, InsufficientBalance, InvalidAmount, ValidationFailed
from worker.infra.db import settings_of
from worker.ledger import pg
from worker.ledger.keys import IdempotencyKey, client_key, refusal, used_keys
from worker.ledger.legs import Leg, OnShort, Posted, Replayed, entry_row, prepare
from worker.ledger.objects import committed, transient
from worker.ledger.wallets import LockedWallet, lock_wallets, wallet_columns
from worker.models import LedgerEntry, Wallet, new_id, utcnow
from worker.money import MAX_AMOUNT
from worker.notify import commit_hooks
from worker.notify.lowbalance import WalletState

Result = Posted | Replayed | None
# A lost race for a key makes the transactional path judge the keys again; a race lost
# this many times in a row is no race but a bug, and is raised.
_KEY_RACE_ATTEMPTS = 3


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
        and legs[0].on_short is OnShort.REFUSE
        and session.get_bind().dialect.name == "postgresql"
    ):
        posted = _one_statement(session, settings, legs[0], savepoint)
        if posted is not None:
            return [posted]
    return _transactional(session, settings, legs, savepoint, duplicates, locked)


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
    )
    result = post(session, [leg], savepoint=savepoint)[0]
    assert not isinstance(result, Replayed)  # duplicates raise
    return result


# -- one statement -------------------------------------------------------------------------


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
    return values


def statement_result(row: Any, values: dict[str, Any]) -> tuple[dict[str, Any], LockedWallet]:
    """The entry's columns and the wallet after it, from the statement's one result row."""
    balance, pending_usage_scaled, low_state, created_at, seq, thresholds = row
    entry = {k: v for k, v in values.items() if k not in ("delta", "threshold")}
    entry.update(seq=seq, before_balance=balance - values["delta"], after_balance=balance)
    wallet = LockedWallet(
        values["customer_id"],
        values["currency"],
        balance,
        pending_usage_scaled,
        low_state,
        created_at,
        thresholds,
    )
    return entry, wallet


def _one_statement(
    session: Session, settings: Settings, leg: Leg, savepoint: bool
) -> Posted | None:
    values = statement_values(settings, leg)
    sql = pg.SINGLE[(leg.key is not None, False)]
    session.flush()  # the caller's pending changes go first, as autoflush would do
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
    return _posted(session, leg, entry, wallet, leg.amount)


# -- the transaction -----------------------------------------------------------------------


def _transactional(
    session: Session,
    settings: Settings,
    legs: list[Leg],
    savepoint: bool,
    duplicates: str,
    locked: dict[tuple[str, str], LockedWallet] | None,
) -> list[Result]:
    guarded = savepoint and any(leg.key is not None for leg in legs)
    for _ in range(_KEY_RACE_ATTEMPTS):
        results: list[Result] = [None] * len(legs)
        todo = _judge_keys(session, legs, results, duplicates)
        if not todo:
            return results
        wanted = [legs[i].wallet for i in todo]
        if locked is None or any(w not in locked for w in wanted):
            locked = lock_wallets(session, wanted)
        rows, balances = _judge_balances(settings, legs, todo, locked)
        if not rows:
            return results
        try:
            if guarded:
                # A concurrent transaction may take one of our keys after we looked: the
                # unique index refuses our insert and we judge the keys again.
                with session.begin_nested():
                    seqs = _write(session, rows, balances, locked)
            else:
                seqs = _write(session, rows, balances, locked)
        except IntegrityError:
            if not guarded:
                raise
            continue
        for (i, row, asked), seq in zip(rows, seqs, strict=True):
            row["seq"] = seq
            wallet = locked[legs[i].wallet]._replace(balance=balances[legs[i].wallet])
            results[i] = _posted(session, legs[i], row, wallet, asked)
        return results
    raise RuntimeError("lost the race for an idempotency key repeatedly")


def _judge_keys(
    session: Session, legs: list[Leg], results: list[Result], duplicates: str
) -> list[int]:
    """The indexes of the legs to post; a leg whose key is used is answered here."""
    used = used_keys(session, [(leg.customer_id, leg.key) for leg in legs if leg.key])
    todo = []
    for i, leg in enumerate(legs):
        original = used.get((leg.customer_id, leg.key)) if leg.key else None
        if original is None:
            todo.append(i)
            continue
        answer = refusal(original, leg.key, leg.params())
        if duplicates == "raise":
            raise answer
        duplicate = isinstance(answer, DuplicateEntry)
        results[i] = Replayed(answer.entry if duplicate else answer.original)
    return todo


def _judge_balances(
    settings: Settings,
    legs: list[Leg],
    todo: list[int],
    locked: dict[tuple[str, str], LockedWallet],
) -> tuple[list[tuple[int, dict[str, Any], int]], dict[tuple[str, str], int]]:
    """Each leg against the locked balances, in order (a wallet's legs chain): the rows to
    write (leg index, row, amount asked) and each wallet's balance after them."""
    balances = {legs[i].wallet: locked[legs[i].wallet].balance for i in todo}
    rows = []
    now = utcnow()
    for i in todo:
        leg = legs[i]
        before = balances[leg.wallet]
        amount = leg.amount
        if leg.is_credit:
            if before + amount > MAX_AMOUNT:
                raise InvalidAmount(f"would take the {leg.currency} balance above {MAX_AMOUNT}")
        elif before < amount:
            if leg.on_short is OnShort.REFUSE:
                raise InsufficientBalance(balance=before, requested=amount, currency=leg.currency)
            amount = before
            if amount == 0:
                continue
        row = entry_row(
            leg,
            entry_id=new_id("wle"),
            business_id=settings.business_id,
            before=before,
            amount=amount,
            now=now,
        )
        balances[leg.wallet] = row["after_balance"]
        rows.append((i, row, leg.amount))
    return rows, balances


def _write(
    session: Session,
    rows: list[tuple[int, dict[str, Any], int]],
    balances: dict[tuple[str, str], int],
    locked: dict[tuple[str, str], LockedWallet],
) -> list[int]:
    """Move the wallets and insert the entries; the entries' seqs, in row order."""
    entries = [row for _, row, _ in rows]
    moved = {(e["customer_id"], e["currency"]) for e in entries}
    deltas = {w: balances[w] - locked[w].balance for w in sorted(moved)}
    now = entries[0]["created_at"]
    if session.get_bind().dialect.name == "postgresql":
        updated, written_ids = session.execute(
            pg.BATCH,
            {
                "entries": pg.rows_json([{**e, "ord": i} for i, e in enumerate(entries)]),
                "wallets": pg.rows_json(
                    [{"customer_id": w[0], "currency": w[1], "delta": d} for w, d in deltas.items()]
                ),
                "now": now,
            },
        ).one()
        by_id = dict(written_ids or ())
        written = [by_id.get(e["id"]) for e in entries]
    else:
        table = Wallet.__table__
        moved_rows = session.execute(
            update(table)
            .where(
                table.c.customer_id == bindparam("w_customer_id"),
                table.c.currency == bindparam("w_currency"),
                table.c.balance + bindparam("w_delta") >= 0,
                table.c.balance + bindparam("w_delta") <= MAX_AMOUNT,
            )
            .values(balance=table.c.balance + bindparam("w_delta"), updated_at=now),
            [{"w_customer_id": w[0], "w_currency": w[1], "w_delta": d} for w, d in deltas.items()],
        )
        updated = moved_rows.rowcount
        entry_table = LedgerEntry.__table__
        written = list(
            session.scalars(
                insert(entry_table).returning(entry_table.c.seq, sort_by_parameter_order=True),
                entries,
            )
        )
    # The wallets are locked and every leg was judged against them: anything else is a bug.
    if updated != len(deltas) or None in written or len(written) != len(entries):
        raise AssertionError(f"posting wrote {updated} of {len(deltas)} wallets")
    return written


# -- results -------------------------------------------------------------------------------


def _posted(
    session: Session, leg: Leg, entry: dict[str, Any], wallet: LockedWallet, asked: int
) -> Posted:
    """The result of a written leg; tells the commit hooks (low-balance check, metrics,
    notifications) about its entry."""
    key = leg.wallet
    values = wallet_columns(wallet, entry["created_at"])
    # A wallet this session already loaded shows its new balance at once; one it did not is
    # built only if the caller asks for it.
    identity = Wallet.__mapper__.identity_key_from_primary_key(key)
    if identity in session.identity_map:
        committed(session, Wallet, key, values)
    record = transient(LedgerEntry, entry)
    state = WalletState(
        key[0], key[1], entry["after_balance"], wallet.low_state, wallet.low_balance_thresholds
    )
    commit_hooks.entry_posted(session, record, state)
    return Posted(
        entry=record,
        state=state,
        shortfall=asked - entry["amount"],
        make_wallet=lambda: committed(session, Wallet, key, values),
    )
