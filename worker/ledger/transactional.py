"""The transactional path of the posting pipeline (``posting.post`` chooses it).

Look up the legs' keys in one query; lock the wallets in one statement in (customer,
currency) order, so two batches never deadlock; judge every leg against the locked balances
in Python (refuse, take what is there, or the balance cap); write every wallet and entry in
one statement (PostgreSQL) or two (SQLite). A concurrent transaction that takes one of the
keys meanwhile loses nothing: the unique index refuses our insert, the savepoint undoes it,
and the keys are judged again.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, insert, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from worker.config import Settings
from worker.errors import DuplicateEntry, InsufficientBalance, InvalidAmount
from worker.ledger import lots, pg
from worker.ledger.keys import refusal, used_keys
from worker.ledger.legs import Leg, OnShort, Posted, Replayed, entry_row
from worker.ledger.objects import committed, transient
from worker.ledger.wallets import LockedWallet, lock_wallets, wallet_columns
from worker.models import CreditLot, LedgerEntry, LotConsumption, Wallet, new_id, utcnow
from worker.money import MAX_AMOUNT
from worker.notify import commit_hooks
from worker.notify.lowbalance import WalletState

Result = Posted | Replayed | None
# A lost race for a key makes the transactional path judge the keys again; a race lost
# this many times in a row is no race but a bug, and is raised.
_KEY_RACE_ATTEMPTS = 3


def post_in_transaction(
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
        rows, balances, book = _judge_balances(session, settings, legs, todo, locked)
        if not rows:
            return results
        try:
            if guarded:
                # A concurrent transaction may take one of our keys after we looked: the
                # unique index refuses our insert and we judge the keys again.
                with session.begin_nested():
                    seqs = _write(session, rows, balances, locked, book)
            else:
                seqs = _write(session, rows, balances, locked, book)
        except IntegrityError:
            if not guarded:
                raise
            continue
        for (i, row, asked), seq in zip(rows, seqs, strict=True):
            row["seq"] = seq
            wallet = locked[legs[i].wallet]._replace(balance=balances[legs[i].wallet])
            results[i] = posted(session, legs[i], row, wallet, asked)
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
    session: Session,
    settings: Settings,
    legs: list[Leg],
    todo: list[int],
    locked: dict[tuple[str, str], LockedWallet],
) -> tuple[list[tuple[int, dict[str, Any], int]], dict[tuple[str, str], int], lots.Book]:
    """Each leg against the locked balances and lots, in order (a wallet's legs chain): the
    rows to write (leg index, row, amount asked), each wallet's balance after them, and the
    lots they create and spend.

    A debit spends only its wallet's live lots less what its holds reserve: the balance may
    still hold an expired lot's remainder that its ``expiration`` entry has not yet taken.
    """
    balances = {legs[i].wallet: locked[legs[i].wallet].balance for i in todo}
    needs: dict[tuple[str, str], int] = {}
    named = set()
    for i in todo:
        leg = legs[i]
        if not leg.is_credit:
            if leg.lot_id is not None:
                named.add(leg.lot_id)
            if leg.event_type != "expiration":
                # Enough lots to cover the holds too: held money is not spendable.
                base = needs.get(leg.wallet, locked[leg.wallet].held)
                needs[leg.wallet] = base + leg.amount
    now = utcnow()
    book = lots.load(session, needs, named, now)
    rows = []
    for i in todo:
        leg = legs[i]
        before = balances[leg.wallet]
        amount = leg.amount
        expiring = leg.lot_id if leg.event_type == "expiration" else None
        if leg.is_credit:
            if before + amount > MAX_AMOUNT:
                raise InvalidAmount(f"would take the {leg.currency} balance above {MAX_AMOUNT}")
        else:
            # A debit spends only the available balance: the live lots less the wallet's
            # active holds (a capture's caller has already released its own hold from
            # ``locked``). An expiration takes its own lot whatever is held.
            spendable = (
                book.remaining(leg.wallet, expiring)
                if expiring
                else max(book.spendable(leg.wallet, now) - locked[leg.wallet].held, 0)
            )
            if spendable < amount:
                if leg.on_short is OnShort.REFUSE:
                    raise InsufficientBalance(
                        balance=spendable, requested=amount, currency=leg.currency
                    )
                amount = spendable
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
        if leg.is_credit:
            book.credit(leg.wallet, row, leg)
        else:
            book.draw(leg.wallet, row["id"], amount, now, first=leg.lot_id, expiring=expiring)
        balances[leg.wallet] = row["after_balance"]
        rows.append((i, row, leg.amount))
    return rows, balances, book


def _write(
    session: Session,
    rows: list[tuple[int, dict[str, Any], int]],
    balances: dict[tuple[str, str], int],
    locked: dict[tuple[str, str], LockedWallet],
    book: lots.Book,
) -> list[int]:
    """Move the wallets, insert the entries, create and spend the lots; the entries' seqs, in
    row order."""
    entries = [row for _, row, _ in rows]
    moved = {(e["customer_id"], e["currency"]) for e in entries}
    deltas = {w: balances[w] - locked[w].balance for w in sorted(moved)}
    new_lots, spent_lots, consumptions = book.rows()
    now = entries[0]["created_at"]
    if session.get_bind().dialect.name == "postgresql":
        updated, written_ids, spent = session.execute(
            pg.BATCH,
            {
                "entries": pg.rows_json([{**e, "ord": i} for i, e in enumerate(entries)]),
                "wallets": pg.rows_json(
                    [{"customer_id": w[0], "currency": w[1], "delta": d} for w, d in deltas.items()]
                ),
                "new_lots": pg.rows_json([{**lot, "ord": i} for i, lot in enumerate(new_lots)]),
                "spent_lots": pg.rows_json(spent_lots),
                "consumptions": pg.rows_json(consumptions),
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
        spent = _write_lots_sqlite(session, new_lots, spent_lots, consumptions)
    # The wallets are locked and every leg was judged against them: anything else is a bug.
    if updated != len(deltas) or None in written or len(written) != len(entries):
        raise AssertionError(f"posting wrote {updated} of {len(deltas)} wallets")
    if spent != len(spent_lots):
        raise AssertionError(f"posting spent {spent} of {len(spent_lots)} lots")
    return written


def _write_lots_sqlite(
    session: Session,
    new_lots: list[dict[str, Any]],
    spent_lots: list[dict[str, Any]],
    consumptions: list[dict[str, Any]],
) -> int:
    """SQLite's share of ``pg.BATCH``'s lot statements; how many stored lots it spent."""
    if new_lots:
        session.execute(insert(CreditLot.__table__), new_lots)
    spent = 0
    if spent_lots:
        table = CreditLot.__table__
        spent = session.execute(
            update(table)
            .where(table.c.id == bindparam("lot_id"), table.c.remaining >= bindparam("lot_taken"))
            .values(
                remaining=table.c.remaining - bindparam("lot_taken"),
                expired=table.c.expired + bindparam("lot_expired"),
            ),
            [
                {"lot_id": r["id"], "lot_taken": r["taken"], "lot_expired": r["expired"]}
                for r in spent_lots
            ],
        ).rowcount
    if consumptions:
        session.execute(insert(LotConsumption.__table__), consumptions)
    return spent


# -- results -------------------------------------------------------------------------------


def posted(
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
        key[0],
        key[1],
        entry["after_balance"],
        wallet.low_state,
        wallet.low_balance_thresholds,
        wallet.held,
        wallet.depleted,
    )
    commit_hooks.entry_posted(session, record, state)
    return Posted(
        entry=record,
        state=state,
        shortfall=asked - entry["amount"],
        make_wallet=lambda: committed(session, Wallet, key, values),
    )
