"""Usage billing: batched, exactly-once debits with exact accrual.

Accrual rule, per wallet: ``pending_usage_scaled + sum(cost_scaled)`` of a batch is split into
whole minor units (debited as ONE ``usage`` ledger entry) and a remainder below one minor unit
(kept in ``pending_usage_scaled``). Nothing is rounded, so for any set of events and any
batching: debited + unbilled + remainder == the exact sum of their costs.

An event whose ``metadata.hold_id`` names an active hold of its wallet (in its currency, not
past its expiry) is paid from that hold: the whole minor units of its cost, up to the hold,
are captured (one debit entry keyed by the hold, as ``worker.ledger.holds.capture_hold``
writes it) and the rest of the hold released, in the batch's transaction. What its cost has
beyond that (the part above the hold, and the fraction below one minor unit) is accrued with
the wallet's other events, so the rule above still holds to the unit. A hold named by no
active hold (unknown, released, captured by an earlier event) bills the event as usual.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import bindparam, select, text, update
from sqlalchemy.orm import Session

from worker import ledger, notify
from worker.ledger import holds
from worker.ledger.schemas import USAGE_SCALE
from worker.models import UsageEvent, Wallet, WalletHold, utcnow
from worker.notify import commit_hooks

# The actor of usage debits (settlement after a top-up is the system's).
USAGE_ACTOR = "usage"

# Events one billing transaction takes. Larger batches mean fewer ledger entries (one per
# wallet per batch) and fewer commits; the transaction stays well under a second.
BATCH_SIZE = 5000


@dataclass
class BatchResult:
    events: int = 0
    wallets: int = 0
    debited: int = 0  # whole minor units debited by this batch
    unbilled: int = 0  # whole minor units the wallets could not pay
    entry_ids: list[str] = field(default_factory=list)


def bill_batch(session: Session, limit: int = BATCH_SIZE) -> BatchResult:
    """Bill up to ``limit`` pending events, oldest first, in the caller's transaction.

    The events are locked with ``FOR UPDATE SKIP LOCKED`` (PostgreSQL), so concurrent
    workers take disjoint batches and a redelivered task finds its events already processed.
    The events' status, the ledger entries and the wallets' remainders commit together, so a
    batch applies entirely or not at all. Never commits.
    """
    pending = _claim(session, limit)
    result = BatchResult(events=len(pending))
    if not pending:
        return result
    groups: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for row in pending:
        groups[(row.customer_id, row.currency)].append(row)
    keys = sorted(groups)
    wallets = ledger.lock_wallets(session, keys)
    now = utcnow()
    # Events paid from a hold (under the wallets' locks: the holds cannot move meanwhile).
    captures = _captures(session, pending, now)
    capture_legs = [_capture_leg(hold, amount) for hold, amount in captures.values() if amount > 0]
    # The captured holds' reservations pay for their captures and free what is left of them.
    unheld = dict(wallets)
    for hold, _ in captures.values():
        w = unheld[(hold.customer_id, hold.currency)]
        unheld[(hold.customer_id, hold.currency)] = w._replace(held=w.held - hold.amount)
    accrued: dict[tuple[str, str], tuple[int, int]] = {}
    legs: list[ledger.Leg] = []
    for key in keys:
        if captures:
            # What each event owes beyond its capture (all of it, for events without one).
            groups[key] = [_beyond(row, captures.get(row.seq)) for row in groups[key]]
        rows = groups[key]
        customer_id, currency = key
        total = wallets[key].pending_usage_scaled + sum(r.cost_scaled for r in rows)
        whole, remainder = divmod(total, USAGE_SCALE)
        accrued[key] = (whole, remainder)
        if whole:
            names = sorted({r.event_name for r in rows})
            legs.append(
                ledger.Leg(
                    customer_id=customer_id,
                    currency=currency,
                    amount=whole,
                    is_credit=False,
                    event_type="usage",
                    reason=f"usage: {len(rows)} event(s) ({', '.join(names)})"[:1000],
                    # Derived from the batch's events, not from the delivery: the first seq of a
                    # wallet's events belongs to exactly one batch, so applying the same events
                    # twice would collide here even if the status check were bypassed.
                    key=ledger.system_key("usage", f"{rows[0].seq}-{rows[-1].seq}", currency),
                    # The usage already happened: take what the wallet holds, owe the rest.
                    on_short=ledger.OnShort.TAKE,
                    actor=USAGE_ACTOR,
                )
            )
    # All wallets of the batch in one posting (a few statements, not a few per wallet). A key
    # already used answers its own wallet (those events were billed by that entry) and never
    # stalls the others.
    all_results = ledger.post(session, capture_legs + legs, duplicates="skip", locked=unheld)
    captured = _close_holds(session, captures, capture_legs, all_results[: len(capture_legs)], now)
    results = all_results[len(capture_legs) :]
    result.entry_ids += [entry_id for entry_id, _, _ in captured.values() if entry_id]
    posted = {
        leg.wallet: result.entry
        for leg, result in zip(legs, results, strict=True)
        if result is not None
    }
    # One array per column of the events' and wallets' updates (see _MARK_PG).
    seqs: list[int] = []
    statuses: list[str] = []
    unbilled: list[int] = []
    event_entries: list[str | None] = []
    remainders: list[int] = []
    for key in keys:
        rows = groups[key]
        customer_id, currency = key
        whole, remainder = accrued[key]
        remainders.append(remainder)
        entry = posted.get(key)
        entry_id = entry.id if entry else None
        applied = entry.amount if entry else 0
        if entry_id:
            result.entry_ids.append(entry_id)
        shortfall = whole - applied
        result.debited += applied
        result.unbilled += shortfall
        seqs.extend(r.seq for r in rows)
        # An event paid from a hold points at its capture's entry.
        event_entries.extend(captured[r.seq][0] if r.seq in captured else entry_id for r in rows)
        for r in rows:
            if r.seq in captured:
                result.debited += captured[r.seq][1]
                result.unbilled += captured[r.seq][2]
        if not shortfall:
            for r in rows:
                short = captured[r.seq][2] if r.seq in captured else 0
                statuses.append("unbilled" if short else "processed")
                unbilled.append(short)
            continue
        # Usage already happened: it is recorded as owed, and the merchant is told.
        notify.enqueue_event(
            session,
            "usage.unbilled",
            {
                "customer_id": customer_id,
                "currency": currency,
                "balance": entry.after_balance if entry else 0,
                "unbilled_amount": shortfall,
                "event_count": len(rows),
                "ledger_entry_id": entry_id,
            },
        )
        owed = _allocate_shortfall(rows, shortfall)
        for row in rows:
            short = owed.get(row.seq, 0) + (captured[row.seq][2] if row.seq in captured else 0)
            statuses.append("unbilled" if short else "processed")
            unbilled.append(short)
    # The wallets are locked (above), so writing the computed remainder cannot lose a
    # concurrent accrual: any other batch touching these wallets waits for our commit.
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            _MARK_PG,
            {
                "now": now,
                "customers": [k[0] for k in keys],
                "currencies": [k[1] for k in keys],
                "remainders": remainders,
                "seqs": seqs,
                "statuses": statuses,
                "unbilled": unbilled,
                "entries": event_entries,
            },
        )
    else:
        wallets_t = Wallet.__table__
        session.execute(
            update(wallets_t)
            .where(
                wallets_t.c.customer_id == bindparam("b_customer"),
                wallets_t.c.currency == bindparam("b_currency"),
            )
            .values(pending_usage_scaled=bindparam("b_remainder")),
            [
                {"b_customer": k[0], "b_currency": k[1], "b_remainder": r}
                for k, r in zip(keys, remainders, strict=True)
            ],
        )
        table = UsageEvent.__table__
        session.execute(
            update(table)
            .where(table.c.seq == bindparam("b_seq"), table.c.status == "pending")
            .values(
                status=bindparam("b_status"),
                unbilled_amount=bindparam("b_unbilled"),
                ledger_entry_id=bindparam("b_entry"),
                processed_at=now,
            ),
            [
                {"b_seq": q, "b_status": st, "b_unbilled": u, "b_entry": e}
                for q, st, u, e in zip(seqs, statuses, unbilled, event_entries, strict=True)
            ],
        )
    result.wallets = len(groups)
    return result


# -- claiming a batch -------------------------------------------------------------------------
# Every customer's events belong to one of LANES billing lanes (a hash of the customer id). A
# batch on PostgreSQL takes the lanes of the oldest pending events with a transaction-scoped
# advisory lock that never waits, only as many as its events fill, and bills only their events. Two workers therefore bill disjoint sets of wallets at the same time instead of
# queueing on the same wallets' locks, and a customer's events are still billed by one batch at
# a time, oldest first (a later batch gets the lane only after this one committed). Locks are
# transaction-scoped only, so this works through PgBouncer in transaction pooling mode.
LANES = 16
LANE_LOCK_SPACE = 0x62777573  # "bwus": the advisory lock namespace (two-int form) of lanes
_LANE_SQL = f"(hashtext(usage_events.customer_id) & 2147483647) % {LANES}"
# How many pending events a batch looks at to choose its lanes, per event it may bill.
PEEK_FACTOR = 2

_PEEK = text(f"""
    SELECT lane, count(*) FROM (
        SELECT {_LANE_SQL} AS lane, seq FROM usage_events
        WHERE status = 'pending' ORDER BY seq LIMIT :window
    ) AS oldest
    GROUP BY lane ORDER BY min(seq)
""")  # noqa: S608 (a constant expression; the values are bound)
_TRY_LANES = text(
    "SELECT lane FROM unnest(CAST(:lanes AS int[])) WITH ORDINALITY AS t(lane, n)"
    " WHERE pg_try_advisory_xact_lock(:space, lane) ORDER BY n"
).bindparams(bindparam("space", LANE_LOCK_SPACE))


def _claim(session: Session, limit: int) -> list[Any]:
    """Lock and return up to ``limit`` pending events, oldest first: on PostgreSQL those of the
    lanes this batch could take (see LANES), on SQLite (one writer at a time) any."""
    query = (
        select(
            UsageEvent.seq,
            UsageEvent.customer_id,
            UsageEvent.currency,
            UsageEvent.cost_scaled,
            UsageEvent.event_name,
            # Only the hold it names: decoding every event's whole metadata cost a tenth of
            # the batch.
            UsageEvent.metadata_["hold_id"].as_string().label("hold_id"),
        )
        .where(UsageEvent.status == "pending")
        .order_by(UsageEvent.seq)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        seen = dict(session.execute(_PEEK, {"window": limit * PEEK_FACTOR}).tuples().all())
        untried = list(seen)  # in order of each lane's oldest event
        got: list[int] = []
        # Lanes a few at a time until their events fill the batch (a lane another batch holds
        # fills nothing, so others are tried in its place): a backlog leaves the remaining
        # lanes to another worker.
        while untried and sum(seen[lane] for lane in got) < limit:
            chosen, planned = [], sum(seen[lane] for lane in got)
            while untried and planned < limit:
                chosen.append(lane := untried.pop(0))
                planned += seen[lane]
            got += session.scalars(_TRY_LANES, {"lanes": chosen})
        if not got:
            return []  # nothing pending, or every lane with pending events is being billed
        query = query.where(text(f"{_LANE_SQL} = ANY(CAST(:lanes AS int[]))").bindparams(lanes=got))
    return list(session.execute(query.with_for_update(skip_locked=True)).all())


# The wallets' remainders and the events' outcome in ONE statement (two data-modifying CTEs on
# different tables), each table's rows as one array per column: one round trip for the batch.
_MARK_PG = text("""
    WITH r AS (
        UPDATE wallets w SET pending_usage_scaled = v.remainder
        FROM unnest(CAST(:customers AS text[]), CAST(:currencies AS text[]),
                    CAST(:remainders AS bigint[])) AS v(customer_id, currency, remainder)
        WHERE w.customer_id = v.customer_id AND w.currency = v.currency
        RETURNING 1
    )
    UPDATE usage_events u
    SET status = v.status, unbilled_amount = v.unbilled, ledger_entry_id = v.entry,
        processed_at = :now
    FROM unnest(CAST(:seqs AS bigint[]), CAST(:statuses AS text[]),
                CAST(:unbilled AS bigint[]), CAST(:entries AS text[]))
         AS v(seq, status, unbilled, entry)
    WHERE u.seq = v.seq AND u.status = 'pending'
""")


class _Owed(NamedTuple):
    """An event as its wallet's accrual sees it: what it owes beyond its hold's capture."""

    seq: int
    cost_scaled: int
    event_name: str


def _hold_id(value: Any) -> str | None:
    """The event's ``metadata.hold_id``, if it is a non-empty string."""
    return value if isinstance(value, str) and value else None


def _captures(
    session: Session, pending: Sequence[Any], now: datetime
) -> dict[int, tuple[WalletHold, int]]:
    """Event seq -> (its active hold, the whole minor units to capture from it): the first
    event naming a hold takes it; a later one naming the same hold is billed as usual."""
    wanted = {(r.customer_id, h) for r in pending if (h := _hold_id(r.hold_id))}
    if not wanted:
        return {}
    found = {
        (h.customer_id, h.hold_id): h
        for h in session.scalars(
            select(WalletHold)
            .where(
                WalletHold.customer_id.in_(sorted({c for c, _ in wanted})),
                WalletHold.hold_id.in_(sorted({h for _, h in wanted})),
                WalletHold.status == "active",
                WalletHold.kind == "hold",
            )
            .execution_options(populate_existing=True)
        )
    }
    captures: dict[int, tuple[WalletHold, int]] = {}
    taken: set[tuple[str, str]] = set()
    for row in pending:
        hold_id = _hold_id(row.hold_id)
        hold = found.get((row.customer_id, hold_id)) if hold_id else None
        if (
            hold is None
            or (row.customer_id, hold.hold_id) in taken
            or hold.currency != row.currency
            or (hold.expires_at is not None and hold.expires_at <= now)
        ):
            continue
        taken.add((row.customer_id, hold.hold_id))
        captures[row.seq] = (hold, min(row.cost_scaled // USAGE_SCALE, hold.amount))
    return captures


def _capture_leg(hold: WalletHold, amount: int) -> ledger.Leg:
    return ledger.Leg(
        customer_id=hold.customer_id,
        currency=hold.currency,
        amount=amount,
        is_credit=False,
        event_type="usage",
        reason=hold.reason or f"hold {hold.hold_id} captured",
        reference_object_id=hold.hold_id,
        # The key capture_hold uses: one capture entry per hold, whoever captures it.
        key=ledger.system_key("hold", hold.hold_id),
        on_short=ledger.OnShort.TAKE,
        actor=USAGE_ACTOR,
    )


def _beyond(row: Any, capture: tuple[WalletHold, int] | None) -> _Owed:
    captured = capture[1] if capture else 0
    return _Owed(row.seq, row.cost_scaled - captured * USAGE_SCALE, row.event_name)


def _close_holds(
    session: Session,
    captures: dict[int, tuple[WalletHold, int]],
    legs: list[ledger.Leg],
    results: Sequence[Any],
    now: datetime,
) -> dict[int, tuple[str | None, int, int]]:
    """Mark each captured hold; event seq -> (capture entry id, debited, unbilled)."""
    by_hold = {leg.reference_object_id: result for leg, result in zip(legs, results, strict=True)}
    out: dict[int, tuple[str | None, int, int]] = {}
    for seq, (hold, amount) in captures.items():
        result = by_hold.get(hold.hold_id)
        entry = result.entry if result is not None else None
        took = entry.amount if entry is not None else 0
        holds.close_hold(
            session,
            hold,
            "captured",
            USAGE_ACTOR,
            now,
            captured_amount=took,
            entry_id=entry.id if entry is not None else None,
        )
        commit_hooks.wallet_changed(session, hold.customer_id, hold.currency)
        out[seq] = (entry.id if entry is not None else None, took, amount - took)
    return out


def _allocate_shortfall(rows: Sequence[Any], shortfall: int) -> dict[int, int]:
    """Spread unpaid whole units over the batch's events, newest first.

    Each event owes at most its cost rounded up to a whole unit, and the sum of those caps is
    always at least the whole units of the batch, so the shortfall is always fully assigned.
    The oldest events are the ones paid for.
    """
    owed: dict[int, int] = {}
    left = shortfall
    for row in reversed(rows):
        if left <= 0:
            break
        cap = -(-row.cost_scaled // USAGE_SCALE)
        take = min(cap, left)
        if take:
            owed[row.seq] = take
            left -= take
    if left:  # unreachable by the argument above; refuse rather than lose money
        raise AssertionError(f"could not assign {left} unbilled minor units")
    return owed
