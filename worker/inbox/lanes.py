"""Claiming a batch of fresh events without a global lock (PostgreSQL).

Batches run in parallel, any number of them, on any number of machines. Two rules make that
safe:

- **One customer, one batch at a time, in arrival order.** Every event has a *lane*: the
  customer whose wallets it changes (``worker.inbox.handlers.LANES`` reads the candidates
  from the payload, in the order the handler looks the customer up; the first naming a known
  customer, by id, email or the payment a refund reverses, wins). A batch looks at
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

from sqlalchemy import bindparam, or_, select, text
from sqlalchemy.orm import Session

from worker.inbox.handlers import LANES
from worker.models import Customer, InboxEvent, TopupPayment, Wallet
from worker.payments.topups import CHECKED_CUSTOMERS, KNOWN_CUSTOMERS

# The advisory lock namespace of inbox lanes (the two-int form: this, hashtext(lane)). A hash
# collision only makes two customers share a lane now and then.
LANE_LOCK_SPACE = 0x62776C6E  # "bwln"

# How far past ``limit`` a batch looks for events of lanes it can take, when others hold some.
PEEK_FACTOR = 3

_TRY_LANES = text(
    "SELECT lane FROM unnest(CAST(:lanes AS text[])) AS lane"
    " WHERE pg_try_advisory_xact_lock(:space, hashtext(lane))"
).bindparams(bindparam("space", LANE_LOCK_SPACE))


def candidates(provider: str, payload: object) -> list[str]:
    """The lanes an event's payload names, in the order its handler looks the customer up."""
    laner = LANES.get(provider)
    return laner(payload) if laner is not None and isinstance(payload, dict) else []


def resolve(session: Session, events: list[tuple[int, list[str]]]) -> dict[int, str]:
    """Event id -> its lane: "customer:{id}" for the first candidate naming a known customer
    (one query for customers, one for refunded payments), else the first customer it names
    (one the handler will create), else "event:{id}" (it names no one; no order is kept with
    other events)."""
    wanted = {lane for _, lanes in events for lane in lanes}
    known: dict[str, str] = {}
    ids = {lane[9:] for lane in wanted if lane.startswith("customer:")}
    emails = {lane[6:] for lane in wanted if lane.startswith("email:")}
    if ids or emails:
        rows = session.execute(
            select(Customer.customer_id, Customer.email_normalized).where(
                or_(Customer.customer_id.in_(ids), Customer.email_normalized.in_(emails))
            )
        )
        found = set()
        for customer_id, email in rows:
            found.add(customer_id)
            known[f"customer:{customer_id}"] = f"customer:{customer_id}"
            known[f"email:{email}"] = f"customer:{customer_id}"
        # The handlers' own look-up (``worker.payments.dodo.prefetch``) need not ask again.
        session.info.setdefault(KNOWN_CUSTOMERS, set()).update(found)
        session.info.setdefault(CHECKED_CUSTOMERS, set()).update(ids)
    payments = {lane[8:].partition(":")[2] for lane in wanted if lane.startswith("payment:")}
    if payments:
        rows = session.execute(
            select(TopupPayment.provider, TopupPayment.payment_id, TopupPayment.customer_id).where(
                TopupPayment.payment_id.in_(payments), TopupPayment.customer_id.is_not(None)
            )
        )
        for provider, payment_id, customer_id in rows:
            known[f"payment:{provider}:{payment_id}"] = f"customer:{customer_id}"
    resolved = {}
    for event_id, lanes in events:
        lane = next((known[c] for c in lanes if c in known), None)
        # Nothing known yet: the customer the payload names (a refund of a payment not applied
        # yet then shares its payment's lane and waits for it in order), else the payment.
        unknown = [c for c in lanes if not c.startswith("payment:")] or lanes
        resolved[event_id] = lane or (unknown[0] if unknown else f"event:{event_id}")
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
    lanes = resolve(
        session, [(e, candidates(provider, payload)) for e, provider, payload in window]
    )
    by_lane: OrderedDict[str, list[int]] = OrderedDict()
    for event_id, _, _ in window:
        by_lane.setdefault(lanes[event_id], []).append(event_id)

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
