"""Usage debits are posted by ``usage``; settlement after a top-up by ``system``."""

from __future__ import annotations

from sqlalchemy import select

from tests.support.usage import PRICING, new_customer
from worker import ledger, usage
from worker.models import LedgerEntry


def test_usage_billing_is_usage_and_settlement_is_system(tx) -> None:
    with tx() as s:
        cid = new_customer(s, "una@example.com", credit=1)
        # 10 api calls at 0.3 cents: 3 cents, 1 billed now, 2 owed until the top-up.
        usage.ingest(
            s, [usage.NewEvent(f"u{i}", cid, "api_call") for i in range(10)], pricing=PRICING
        )
    with tx() as s:
        usage.bill_batch(s, limit=100)
    with tx() as s:
        ledger.post(s, [ledger.Leg(cid, "USD", 10, True, actor="cli")])
    with tx() as s:
        usage.settle(s, cid)
    with tx() as s:
        rows = s.execute(
            select(LedgerEntry.event_type, LedgerEntry.actor, LedgerEntry.reason).order_by(
                LedgerEntry.seq
            )
        ).all()
    actors = [(event_type, actor) for event_type, actor, _ in rows]
    assert actors[-1] == ("usage", "system")  # the settlement
    assert ("usage", "usage") in actors  # the billing batch
    assert actors[-2] == ("merchant_adjustment", "cli")
