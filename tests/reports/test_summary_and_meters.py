"""Usage cost per meter (exact, fractions as strings) and the business-wide summary, on
SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from tests.support.ledger_clock import post_at
from tests.support.lots import expire, expiring_lot, wait_until_past
from tests.support.usage import PRICING
from worker import ledger, usage
from worker.config import Settings
from worker.infra.db import transaction
from worker.ledger import holds
from worker.models import Wallet, utcnow
from worker.reports import analytics, periods, summary
from worker.reports.schemas import AnalyticsOut, SummaryOut
from worker.usage import NewEvent

BASE = datetime(2026, 5, 4, 9, tzinfo=UTC)


def new_customer(settings: Settings) -> str:
    with transaction(settings) as s:
        customer, _ = ledger.create_customer(s, email=f"{uuid.uuid4().hex}@m.io", name="M")
    return customer.customer_id


def ingest(settings: Settings, customer_id: str, events: list[tuple[str, dict | None]]) -> None:
    now = utcnow()
    with transaction(settings) as s:
        usage.ingest(
            s,
            [
                NewEvent(
                    event_id=uuid.uuid4().hex,
                    customer_id=customer_id,
                    event_name=name,
                    timestamp=now - timedelta(minutes=5),
                    metadata=metadata,
                )
                for name, metadata in events
            ],
            pricing=PRICING,
        )


def test_meter_buckets_carry_the_exact_cost_and_the_wallet_its_fraction(settings: Settings) -> None:
    customer_id = new_customer(settings)
    with transaction(settings) as s:
        ledger.post_entry(s, customer_id=customer_id, currency="USD", amount=1000, is_credit=True)
    ingest(
        settings,
        customer_id,
        [("api_call", None)] * 3 + [("llm_tokens", {"tokens": 1234})],
    )
    with transaction(settings) as s:
        usage.bill_batch(s)
    now = utcnow()
    p = periods.period(now - timedelta(hours=1), now + timedelta(hours=1))
    with transaction(settings) as s:
        report = analytics.analytics(s, customer_id, "USD", p, "month", "meter")
    out = AnalyticsOut.of(customer_id, report).model_dump(mode="json", by_alias=True)
    per_meter: dict[str, list] = defaultdict(lambda: [0, 0])
    costs: dict[str, list[str]] = defaultdict(list)
    for b in out["buckets"]:
        per_meter[b["group"]][0] += b["debits"]
        per_meter[b["group"]][1] += b["count"]
        costs[b["group"]].append(b["cost"])
        assert b["credits"] == 0 and b["net"] == -b["debits"]
    assert dict(per_meter) == {"api_call": [0, 3], "llm_tokens": [2, 1]}
    if len(out["buckets"]) == 2:  # not straddling a month boundary
        assert costs == {"api_call": ["0.9"], "llm_tokens": ["2.468"]}
    # 0.9 + 2.468 = 3.368: 3 debited by the usage entry, 0.368 still accrued on the wallet.
    assert out["pending_usage"] == "0.368"


def test_the_summary_per_currency_reconciles_liability_with_credits_and_debits(
    settings: Settings,
) -> None:
    tx = lambda: transaction(settings)  # noqa: E731
    a, b = new_customer(settings), new_customer(settings)
    post_at(tx, BASE, a, 1000, credit=True, event_type="payment")
    post_at(tx, BASE + timedelta(hours=1), a, 300, credit=False, event_type="usage")
    post_at(tx, BASE + timedelta(hours=2), b, 500, credit=True)
    post_at(tx, BASE + timedelta(hours=2), b, 200, credit=True, currency="INR")
    post_at(tx, BASE + timedelta(hours=5), b, 50, credit=False)  # after `to`
    p = periods.period(BASE + timedelta(minutes=30), BASE + timedelta(hours=3))
    with transaction(settings) as s:
        lines = {c.currency: c for c in summary.summary(s, p)}
    usd, inr = lines["USD"], lines["INR"]
    assert usd.credited == {"merchant_adjustment": 500}
    assert usd.debited == {"usage": 300}
    assert (usd.liability, usd.entries) == (1200, 2)
    with transaction(settings) as s:
        before = {
            c.currency: c
            for c in summary.summary(s, periods.period(BASE - timedelta(days=1), p.start))
        }
    assert before["USD"].liability + usd.total_credited - usd.total_debited == usd.liability
    assert (inr.credited, before["INR"].liability, inr.liability) == (
        {"merchant_adjustment": 200},
        0,
        200,
    )
    out = SummaryOut.of(p.start, p.end, list(lines.values())).model_dump(mode="json", by_alias=True)
    assert out["from"] == "2026-05-04T09:30:00Z" and out["currencies"][0]["currency"] == "USD"


def test_the_summary_splits_expired_credit_and_counts_unbilled_usage(settings: Settings) -> None:
    tx = lambda: transaction(settings)  # noqa: E731
    a, poor = new_customer(settings), new_customer(settings)
    lot_id, moment = expiring_lot(tx, a, 400, category="promotional")
    wait_until_past(moment)
    expire(tx, a, lot_id)
    ingest(settings, poor, [("llm_tokens", {"tokens": 2500})])  # costs 5, the wallet holds 0
    with transaction(settings) as s:
        usage.bill_batch(s)
    now = utcnow()
    p = periods.period(now - timedelta(hours=1), now + timedelta(hours=1))
    with transaction(settings) as s:
        usd = summary.summary(s, p)[0]
    assert usd.currency == "USD"
    assert (usd.expired.paid, usd.expired.promotional) == (0, 400)
    assert usd.debited["expiration"] == 400
    assert usd.unbilled_usage == 5
    assert usd.liability == 0


def test_the_summary_counts_what_holds_reserved_at_to(settings: Settings) -> None:
    customer_id = new_customer(settings)
    with transaction(settings) as s:
        ledger.post_entry(s, customer_id=customer_id, currency="USD", amount=1000, is_credit=True)
    with transaction(settings) as s:
        kept, released, captured = (
            holds.create_hold(
                s,
                customer_id=customer_id,
                currency="USD",
                amount=amount,
                actor="test",
                expires_in_seconds=holds.MAX_HOLD_SECONDS,
            ).hold.hold_id
            for amount in (300, 200, 100)
        )
    now = utcnow()
    # Closed later than now (``now`` is the close's own time): held until then, not after.
    with transaction(settings) as s:
        holds.release_hold(
            s, customer_id=customer_id, hold_id=released, actor="test", now=now + timedelta(hours=1)
        )
        holds.capture_hold(
            s,
            customer_id=customer_id,
            hold_id=captured,
            actor="test",
            amount=40,
            now=now + timedelta(hours=2),
        )

    def held_at(moment: datetime) -> int:
        with transaction(settings) as s:
            line = summary.summary(s, periods.period(now - timedelta(days=1), moment))[0]
        assert line.currency == "USD"
        return line.held

    assert held_at(now - timedelta(hours=1)) == 0  # before any hold
    assert held_at(now + timedelta(minutes=30)) == 600
    assert held_at(now + timedelta(minutes=90)) == 400
    assert held_at(now + timedelta(hours=3)) == 300
    with transaction(settings) as s:
        assert s.scalar(select(func.sum(Wallet.held))) == 300  # what is held now
        assert holds.get_hold(s, customer_id, kept).status == "active"
    p = periods.period(now - timedelta(days=1), now + timedelta(hours=3))
    with transaction(settings) as s:
        out = SummaryOut.of(p.start, p.end, summary.summary(s, p)).model_dump(mode="json")
    assert out["currencies"][0]["held"] == 300
