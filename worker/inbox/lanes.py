"""Claiming a batch of fresh events without a global lock (PostgreSQL).

Batches run in parallel, any number of them, on any number of machines. Two rules make that
safe:

- **One customer, one batch at a time, in arrival order.** Every event has a *lane*: the
  customer whose wallets it changes (``worker.inbox.handlers.LANES`` reads it from the
  payload; an email or a refunded payment is resolved to the customer here). A batch looks at
  the oldest pending events, takes a transaction-scoped advisory lock per lane with
  ``pg_try_advisory_xact_lock`` (never waits, so lanes cannot deadlock) and claims only the
  events of the lanes it got. The events it looked at are the oldest pending ones, so a lane's
  events in that window are that customer's oldest: whoever holds the lane applies them first,
  and a later batch only gets the lane after that one committed.
- **Wallets locked in one order.** Before any handler runs, the batch locks the existing
  wallets of its customers in (customer, currency) order, the order of every posting
  (``worker.ledger.pg.LOCK_WALLETS``). A batch then waits for another only on a prefix of that
  order, so two batches (or a batch and an API posting or a usage debit) queue instead of
  deadlocking, whatever order the events are applied in.

Transaction-scoped locks only (no session state): this works through PgBouncer in transaction
pooling mode. On SQLite there is one writer at a time and none of this is needed.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from sqlalchemy import bindparam, select, text
from sqlalchemy.orm import Session

from worker.inbox.handlers import LANES
from worker.models import Customer, InboxEvent, TopupPayment, Wallet

# The advisory lock namespace of inbox lanes (the two-int form: this, hashtext(lane)). A hash
# collision only makes two customers share a lane now and then.
LANE_LOCK_SPACE = 0x62776C6E  # "bwln"

# How far past ``limit`` a batch looks for events of lanes it can take, when others hold some.
PEEK_FACTOR = 3

_TRY_LANES = text(
    "SELECT lane FROM unnest(CAST(:lanes AS text[])) AS lane"
    " WHERE pg_try_advisory_xact_lock(:space, hashtext(lane))"
).bindparams(bindparam("space", LANE_LOCK_SPACE))


def lane_of(provider: str, payload: object, event_id: int) -> str:
    """The event's lane as its payload says it ("event:{id}" when it names no one)."""
    laner = LANES.get(provider)
    lane = laner(payload) if laner is not None and isinstance(payload, dict) else None
    return lane or f"event:{event_id}"


def resolve(session: Session, lanes: set[str]) -> dict[str, str]:
    """Lane -> "customer:{id}" for the email and payment lanes that name a known customer (one
    query per kind); the others map to themselves."""
    resolved = {lane: lane for lane in lanes}
    emails = {lane[6:]: lane for lane in lanes if lane.startswith("email:")}
    if emails:
        rows = session.execute(
            select(Customer.email_normalized, Customer.customer_id).where(
                Customer.email_normalized.in_(emails)
            )
        )
        for email, customer_id in rows:
            resolved[emails[email]] = f"customer:{customer_id}"
    payments: dict[tuple[str, str], str] = {}
    for lane in lanes:
        if lane.startswith("payment:"):
            provider, _, payment_id = lane[8:].partition(":")
            payments[(provider, payment_id)] = lane
    if payments:
        rows = session.execute(
            select(TopupPayment.provider, TopupPayment.payment_id, TopupPayment.customer_id).where(
                TopupPayment.payment_id.in_({p for _, p in payments}),
                TopupPayment.customer_id.is_not(None),
            )
        )
        for provider, payment_id, customer_id in rows:
            lane = payments.get((provider, payment_id))
            if lane is not None:
                resolved[lane] = f"customer:{customer_id}"
    return resolved


def claim(session: Session, limit: int) -> tuple[list[InboxEvent], bool]:
    """Lock up to ``limit`` fresh pending events of lanes no other transaction holds, and the
    wallets of their customers; returns them in arrival order and whether more may be pending
    (the window looked at was full). Never commits."""
    window = session.execute(
        select(InboxEvent.id, InboxEvent.provider, InboxEvent.payload)
        .where(InboxEvent.status == "pending", InboxEvent.error.is_(None))
        .order_by(InboxEvent.received_at, InboxEvent.id)
        .limit(limit * PEEK_FACTOR)
    ).all()
    if not window:
        return [], False
    more = len(window) == limit * PEEK_FACTOR
    raw = [
        (event_id, lane_of(provider, payload, event_id)) for event_id, provider, payload in window
    ]
    resolved = resolve(session, {lane for _, lane in raw})
    by_lane: OrderedDict[str, list[int]] = OrderedDict()
    for event_id, lane in raw:
        by_lane.setdefault(resolved[lane], []).append(event_id)

    wanted: list[int] = []
    owned: list[str] = []
    untried = list(by_lane)
    # Lanes in order of their oldest event, a few at a time: enough to fill the batch, so a
    # batch does not lock lanes it will not use (another batch can take those).
    while untried and len(wanted) < limit:
        chosen, planned = [], len(wanted)
        while untried and planned < limit:
            lane = untried.pop(0)
            chosen.append(lane)
            planned += len(by_lane[lane])
        got = set(session.scalars(_TRY_LANES, {"lanes": chosen}))
        for lane in chosen:
            if lane in got:
                owned.append(lane)
                # A lane's oldest events first; the rest wait for the next batch, which gets
                # the lane only after this one committed.
                wanted += by_lane[lane][: limit - len(wanted)]
    if not wanted:
        return [], more
    events = list(
        session.scalars(
            select(InboxEvent)
            .where(
                InboxEvent.id.in_(wanted),
                InboxEvent.status == "pending",
                InboxEvent.error.is_(None),
            )
            .order_by(InboxEvent.received_at, InboxEvent.id)
            # Rows another transaction holds are a single ``process_event`` (a retry, a
            # sweep): it applies that one itself.
            .with_for_update(skip_locked=True)
            .execution_options(populate_existing=True)
        )
    )
    lock_customers_wallets(session, [lane[9:] for lane in owned if lane.startswith("customer:")])
    return events, more or len(wanted) < len(window)


def lock_customers_wallets(session: Session, customer_ids: Sequence[str]) -> None:
    """Lock every existing wallet of these customers, in (customer, currency) order."""
    if customer_ids:
        session.execute(
            select(Wallet.customer_id)
            .where(Wallet.customer_id.in_(sorted(set(customer_ids))))
            .order_by(Wallet.customer_id, Wallet.currency)
            .with_for_update()
        ).all()
