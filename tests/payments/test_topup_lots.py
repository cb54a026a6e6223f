"""Top-ups and credit lots, on SQLite and PostgreSQL: a product's validity gives its lot an
expiry counted from the payment, and a refund takes back the top-up's own lot first."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from tests.support.webhooks import dodo_payment, dodo_refund, stripe_event
from worker import inbox, ledger
from worker.config import ConfigError, Settings, TopupProduct, parse_topup_products
from worker.infra.db import transaction
from worker.models import CreditLot, InboxEvent, LedgerEntry, LotConsumption, TopupPayment, utcnow
from worker.payments.topups import LATE_TOPUP_GRACE

ADA = "cus_8VbC6JDZzPEqfBPUdpj0K"
PRODUCTS = "prod_credits_100=10000:USD:365d,prod_promo_5=500:USD:30d,prod_credits_20=2000:USD"


@pytest.fixture
def shop(settings: Settings) -> Callable[[], object]:
    """``shop()`` opens a transaction whose settings carry the top-up products above; Ada,
    the fixture payments' customer, exists."""
    configured = settings.with_overrides(topup_products=PRODUCTS)
    with transaction(configured) as s:
        ledger.create_customer(s, email="ada@example.com", name="Ada", customer_id=ADA)
    return lambda: transaction(configured)


def pay(shop, payload: dict, provider: str = "dodo") -> inbox.Outcome:
    """Store an event as the receiver would and process it, as the worker would."""
    with shop() as s:
        event_id = inbox.record_event(
            s,
            provider=provider,
            provider_event_id=f"msg_{id(payload)}_{utcnow().timestamp()}",
            event_type=payload["type"],
            payload=payload,
        )
    with shop() as s:
        return inbox.process_event(s, event_id)


def product_payment(payment_id: str, *cart: str, created_at: object = "2026-11-26T10:14:58Z"):
    payload = dodo_payment(
        payment_id=payment_id,
        wallet_credit=None,
        product_cart=[{"product_id": p, "quantity": 1} for p in cart],
    )
    if created_at is None:
        del payload["data"]["created_at"]
    else:
        payload["data"]["created_at"] = created_at
    return payload


def topup_lot(shop, payment_id: str) -> CreditLot:
    """The lot the top-up ``payment_id`` created."""
    with shop() as s:
        entry_id = s.scalar(
            select(TopupPayment.ledger_entry_id).where(TopupPayment.payment_id == payment_id)
        )
        return s.scalar(select(CreditLot).where(CreditLot.entry_id == entry_id))


def grant(shop, amount: int, *, days: int | None, category: str = "promotional") -> str:
    """A credit of ``amount`` to Ada's USD wallet expiring in ``days``; its lot's id."""
    with shop() as s:
        [posted] = ledger.post(
            s,
            [
                ledger.Leg(
                    customer_id=ADA,
                    currency="USD",
                    amount=amount,
                    is_credit=True,
                    category=category,
                    expires_at=None if days is None else utcnow() + timedelta(days=days),
                )
            ],
        )
        return s.scalar(select(CreditLot.id).where(CreditLot.entry_id == posted.entry.id))


def spend(shop, amount: int) -> None:
    with shop() as s:
        ledger.post(
            s, [ledger.Leg(customer_id=ADA, currency="USD", amount=amount, is_credit=False)]
        )


def remaining(shop) -> dict[str, int]:
    with shop() as s:
        return dict(s.execute(select(CreditLot.id, CreditLot.remaining)).all())


def taken_by_reversal(shop, refund_id: str) -> list[tuple[str, int]]:
    """What the reversal of ``refund_id`` took from each lot, soonest-expiring lot first."""
    with shop() as s:
        entry_id = s.scalar(
            select(LedgerEntry.id).where(LedgerEntry.idempotency_key == f"refund:{refund_id}")
        )
        rows = s.execute(
            select(LotConsumption.lot_id, LotConsumption.amount)
            .join(CreditLot, CreditLot.id == LotConsumption.lot_id)
            .where(LotConsumption.entry_id == entry_id)
            .order_by(CreditLot.expires_at.is_(None), CreditLot.expires_at)
        )
        return [tuple(row) for row in rows]


def balance(shop) -> int:
    with shop() as s:
        return ledger.get_wallet(s, ADA, "USD").balance


# -- TOPUP_PRODUCTS ----------------------------------------------------------------------


def test_topup_products_parse_with_and_without_validity() -> None:
    assert parse_topup_products("a=10000:USD:365d, b=5:inr:12h ,c=7:USD:90m, d=1:USD") == {
        "a": TopupProduct(10000, "USD", timedelta(days=365)),
        "b": TopupProduct(5, "INR", timedelta(hours=12)),
        "c": TopupProduct(7, "USD", timedelta(minutes=90)),
        "d": TopupProduct(1, "USD", None),
    }


@pytest.mark.parametrize(
    "raw",
    ["p=1:USD:", "p=1:USD:0d", "p=1:USD:30", "p=1:USD:3w", "p=1:USD:-3d", "p=1:USD:1.5d",
     "p=1:USD:99999999d", "p=1:USD:30d:x"],
)  # fmt: skip
def test_malformed_topup_validity_fails_loudly(raw: str) -> None:
    with pytest.raises(ConfigError, match="TOPUP_PRODUCTS: cannot parse"):
        Settings.from_env({"TOPUP_PRODUCTS": raw})


# -- a product's validity ------------------------------------------------------------------


def test_product_with_validity_expires_that_long_after_the_payment(shop) -> None:
    assert pay(shop, product_payment("pay_1", "prod_credits_100")).status == "processed"
    lot = topup_lot(shop, "pay_1")
    assert (lot.amount, lot.remaining, lot.category) == (10000, 10000, "paid")
    assert lot.expires_at == datetime(2026, 11, 26, 10, 14, 58, tzinfo=UTC) + timedelta(days=365)
    assert balance(shop) == 10000


def test_product_without_validity_never_expires(shop) -> None:
    pay(shop, product_payment("pay_1", "prod_credits_20"))
    assert topup_lot(shop, "pay_1").expires_at is None


def test_metadata_topup_never_expires(shop) -> None:
    pay(shop, dodo_payment(payment_id="pay_1", wallet_credit="2000"))
    lot = topup_lot(shop, "pay_1")
    assert (lot.amount, lot.expires_at, lot.category) == (2000, None, "paid")


def test_a_cart_of_several_validities_takes_the_longest(shop) -> None:
    pay(shop, product_payment("pay_1", "prod_credits_100", "prod_promo_5"))
    lot = topup_lot(shop, "pay_1")
    assert lot.amount == 10500
    assert lot.expires_at == datetime(2026, 11, 26, 10, 14, 58, tzinfo=UTC) + timedelta(days=365)
    pay(shop, product_payment("pay_2", "prod_promo_5", "prod_credits_20"))
    assert (topup_lot(shop, "pay_2").amount, topup_lot(shop, "pay_2").expires_at) == (2500, None)


def test_a_payment_without_a_time_counts_from_processing(shop) -> None:
    before = utcnow()
    pay(shop, product_payment("pay_1", "prod_promo_5", created_at=None))
    after = utcnow()
    expires_at = topup_lot(shop, "pay_1").expires_at
    assert before + timedelta(days=30) <= expires_at <= after + timedelta(days=30)


@pytest.mark.parametrize(
    "created_at",
    ["yesterday", "2026-11-26", "2026-11-26T10:14:58", 1764152098, "9999-12-31T23:59Z"],
)
def test_a_malformed_payment_time_fails_the_event_naming_it(shop, created_at) -> None:
    outcome = pay(shop, product_payment("pay_1", "prod_promo_5", created_at=created_at))
    assert outcome.status == "failed"
    with shop() as s:
        assert "data.created_at" in s.get(InboxEvent, outcome.event_id).error
    assert balance(shop) == 0


def test_a_topup_processed_after_its_validity_is_credited_and_lapses_at_once(shop) -> None:
    paid_long_ago = (utcnow() - timedelta(days=40)).isoformat()
    before = utcnow()
    assert pay(shop, product_payment("pay_1", "prod_promo_5", created_at=paid_long_ago)).applied
    after = utcnow()
    lot = topup_lot(shop, "pay_1")
    assert (lot.amount, balance(shop)) == (500, 500)
    assert before + LATE_TOPUP_GRACE <= lot.expires_at <= after + LATE_TOPUP_GRACE


def test_a_redelivered_product_payment_credits_once(shop) -> None:
    payload = product_payment("pay_1", "prod_credits_100")
    assert pay(shop, payload).status == "processed"
    assert pay(shop, payload).status == "processed"
    assert balance(shop) == 10000
    with shop() as s:
        assert len(list(s.scalars(select(CreditLot)))) == 1


# -- a refund takes back its own lot first --------------------------------------------------


def test_refund_takes_the_topups_own_lot_even_when_another_expires_sooner(shop) -> None:
    pay(shop, product_payment("pay_1", "prod_credits_100"))
    promo = grant(shop, 3000, days=10)
    own = topup_lot(shop, "pay_1").id
    assert pay(shop, dodo_refund("pay_1", 2000, refund_id="ref_1")).status == "processed"
    # The fixture's payment is 2000 for the 10000 credit: a full refund takes all of it.
    assert taken_by_reversal(shop, "ref_1") == [(own, 10000)]
    assert remaining(shop) == {own: 0, promo: 3000}
    assert balance(shop) == 3000


def test_partial_refund_takes_its_share_from_its_own_lot(shop) -> None:
    pay(shop, product_payment("pay_1", "prod_credits_100"))
    promo = grant(shop, 3000, days=10)
    own = topup_lot(shop, "pay_1").id
    pay(shop, dodo_refund("pay_1", 500, refund_id="ref_1"))  # a quarter of the payment
    assert taken_by_reversal(shop, "ref_1") == [(own, 2500)]
    assert remaining(shop) == {own: 7500, promo: 3000}


def test_refund_of_a_spent_topup_takes_the_rest_from_the_soonest_expiring_lots(shop) -> None:
    soonest = grant(shop, 1000, days=5)
    pay(shop, product_payment("pay_1", "prod_credits_100"))
    own = topup_lot(shop, "pay_1").id
    spend(shop, 1500)  # 1000 from the soonest lot, 500 from the top-up's
    later = grant(shop, 1000, days=60, category="paid")
    never = grant(shop, 5000, days=None, category="paid")
    assert remaining(shop) == {soonest: 0, own: 9500, later: 1000, never: 5000}
    assert pay(shop, dodo_refund("pay_1", 2000, refund_id="ref_1")).status == "processed"
    assert taken_by_reversal(shop, "ref_1") == [(later, 500), (own, 9500)]
    assert remaining(shop) == {soonest: 0, own: 0, later: 500, never: 5000}
    assert balance(shop) == 5500


def test_refund_after_the_topups_lot_expired_takes_only_live_lots(shop) -> None:
    # Processed after its 30 days had passed: its lot lapses a moment after it is credited.
    paid_long_ago = (utcnow() - timedelta(days=40)).isoformat()
    pay(shop, product_payment("pay_1", "prod_promo_5", created_at=paid_long_ago))
    own = topup_lot(shop, "pay_1")
    other = grant(shop, 1000, days=10)
    while utcnow() <= own.expires_at:  # until it has lapsed (a second at most)
        time.sleep(0.05)
    # The expiry task has not yet taken what is left of it.
    pay(shop, dodo_refund("pay_1", 2000, refund_id="ref_1"))
    assert taken_by_reversal(shop, "ref_1") == [(other, 500)]
    # The expired lot keeps its remainder, unspendable, for its expiration entry.
    assert remaining(shop) == {own.id: 500, other: 500}
    assert balance(shop) == 1000


def test_refund_of_a_metadata_topup_takes_its_own_lot_first(shop) -> None:
    pay(shop, dodo_payment(payment_id="pay_1", wallet_credit="2000"))
    promo = grant(shop, 1000, days=3)
    own = topup_lot(shop, "pay_1").id
    pay(shop, dodo_refund("pay_1", 2000, refund_id="ref_1"))
    assert taken_by_reversal(shop, "ref_1") == [(own, 2000)]
    assert remaining(shop) == {own: 0, promo: 1000}


def test_stripe_refund_takes_the_topups_own_lot_first(shop) -> None:
    intent = {
        "id": "pi_1",
        "object": "payment_intent",
        "amount": 1500,
        "amount_received": 1500,
        "currency": "usd",
        "status": "succeeded",
        "metadata": {"wallet_customer_id": ADA, "wallet_credit": "1500"},
    }
    assert pay(shop, stripe_event("payment_intent.succeeded", intent), "stripe").applied
    promo = grant(shop, 1000, days=3)
    own = topup_lot(shop, "pi_1").id
    refund = {"id": "re_1", "object": "refund", "amount": 600, "status": "succeeded"}
    charge = {
        "id": "ch_1",
        "object": "charge",
        "payment_intent": "pi_1",
        "currency": "usd",
        "amount": 1500,
        "amount_refunded": 600,
        "refunds": {"object": "list", "data": [refund]},
    }
    assert pay(shop, stripe_event("charge.refunded", charge), "stripe").status == "processed"
    assert taken_by_reversal(shop, "re_1") == [(own, 600)]
    assert remaining(shop) == {own: 900, promo: 1000}


def test_reversal_keys_and_amounts_are_as_before(shop) -> None:
    pay(shop, product_payment("pay_1", "prod_credits_100"))
    pay(shop, dodo_refund("pay_1", 2000, refund_id="ref_1"))
    pay(shop, dodo_refund("pay_1", 2000, refund_id="ref_1"))  # redelivered: nothing new
    with shop() as s:
        reversals = list(
            s.scalars(select(LedgerEntry).where(LedgerEntry.event_type == "payment_reversal"))
        )
    assert [(e.amount, e.idempotency_key, e.reference_object_id) for e in reversals] == [
        (10000, "refund:ref_1", "ref_1")
    ]
