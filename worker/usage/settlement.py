"""Settlement: debit outstanding unbilled usage after a top-up, oldest event first."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from worker import ledger
from worker.models import UsageEvent


@dataclass
class Settled:
    customer_id: str
    currency: str
    debited: int
    events_settled: int
    still_unbilled: int
    entry_id: str | None


def settle(session: Session, customer_id: str | None = None) -> list[Settled]:
    """Debit outstanding unbilled usage, oldest event first, as far as balances allow.

    One ``usage`` entry per wallet. Its idempotency key names the oldest outstanding event
    and what it still owes, a state that only ever moves forward, so a repeated settle of
    the same state can never debit twice. Never commits.
    """
    query = select(UsageEvent.customer_id, UsageEvent.currency).where(
        UsageEvent.status == "unbilled"
    )
    if customer_id is not None:
        ledger.get_customer(session, customer_id)
        query = query.where(UsageEvent.customer_id == customer_id)
    keys = sorted(set(session.execute(query.distinct()).tuples()))
    results = []
    for key in keys:
        results.append(_settle_wallet(session, *key))
    return results


def _settle_wallet(session: Session, customer_id: str, currency: str) -> Settled:
    locked = ledger.lock_wallets(session, [(customer_id, currency)])
    wallet = locked[(customer_id, currency)]
    rows = session.execute(
        select(UsageEvent.seq, UsageEvent.unbilled_amount, UsageEvent.event_name)
        .where(
            UsageEvent.customer_id == customer_id,
            UsageEvent.currency == currency,
            UsageEvent.status == "unbilled",
        )
        .order_by(UsageEvent.seq)
        .with_for_update()
    ).all()
    owed = sum(r.unbilled_amount for r in rows)
    if not rows or wallet.available == 0 or owed == 0:
        return Settled(customer_id, currency, 0, 0, owed, None)
    leg = ledger.Leg(
        customer_id=customer_id,
        currency=currency,
        amount=owed,
        is_credit=False,
        on_short=ledger.OnShort.TAKE,
        event_type="usage",
        reason=f"usage settlement: {len(rows)} unbilled event(s) "
        f"({', '.join(sorted({r.event_name for r in rows}))})"[:1000],
        key=ledger.system_key("usage-settle", rows[0].seq, rows[0].unbilled_amount, currency),
        actor="system",  # settlement runs after a top-up or from beat, on nobody's request
    )
    # The wallet is locked above, so the posting does not read it again.
    [posted] = ledger.post(session, [leg], locked=locked)
    paid = posted.entry.amount if posted else 0
    left = paid
    settled = 0
    updates = []
    for row in rows:
        if left <= 0:
            break
        take = min(row.unbilled_amount, left)
        left -= take
        remaining = row.unbilled_amount - take
        settled += remaining == 0
        updates.append(
            {
                "b_seq": row.seq,
                "b_unbilled": remaining,
                "b_status": "unbilled" if remaining else "processed",
            }
        )
    table = UsageEvent.__table__
    session.execute(
        update(table)
        .where(table.c.seq == bindparam("b_seq"))
        .values(unbilled_amount=bindparam("b_unbilled"), status=bindparam("b_status")),
        updates,
    )
    return Settled(
        customer_id, currency, paid, settled, owed - paid, posted.entry.id if posted else None
    )
