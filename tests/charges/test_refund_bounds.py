"""Refunds to wallet are bounded by the payment the service knows, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select

from tests.support.charges import assert_verified, make_customer, paid, usd
from tests.support.processes import create_pg_database, drop_pg_database
from tests.support.webhooks import dodo_payment, stripe_event
from worker import charges, inbox
from worker.config import Settings
from worker.errors import (
    RefundCapExceeded,
    RefundExceedsPayment,
    UnknownPayment,
    ValidationFailed,
)
from worker.infra import migrate
from worker.infra.db import get_engine, transaction
from worker.models import RefundedPayment


def refund(tx, cid: str, amount: int, payment_id: str, currency: str = "USD", **kwargs):
    with tx() as s:
        return charges.refund_to_wallet(s, cid, amount, currency, payment_id, **kwargs)


def store(tx, payload: dict, provider: str = "dodo") -> int:
    with tx() as s:
        stored = inbox.record_event(
            s,
            provider=provider,
            provider_event_id=f"msg_{id(payload)}",
            event_type=payload["type"],
            payload=payload,
        )
    assert stored is not None
    return stored


def totals(tx, cid: str, payment_id: str) -> tuple[str, int | None, int]:
    with tx() as s:
        row = s.get(RefundedPayment, (cid, payment_id))
        return row.source, row.payment_amount, row.refunded_amount


def test_refunds_of_a_stored_payment_stop_at_its_amount(tx) -> None:
    cid = make_customer(tx)
    paid(tx, cid, 5000)
    refund(tx, cid, 3000, "pay_1", refund_id="r1")
    refund(tx, cid, 1500, "pay_1", refund_id="r2")
    with pytest.raises(RefundExceedsPayment) as caught:
        refund(tx, cid, 501, "pay_1", refund_id="r3")
    assert caught.value.field == "amount"
    assert caught.value.details["remaining_amount"] == 500
    refund(tx, cid, 500, "pay_1", refund_id="r3")
    assert totals(tx, cid, "pay_1") == ("inbox", 5000, 5000)
    assert usd(tx, cid) == 5000
    assert_verified(tx)


def test_a_retry_of_a_credited_refund_replays_after_the_payment_is_used_up(tx) -> None:
    cid = make_customer(tx)
    paid(tx, cid, 2000)
    refund(tx, cid, 2000, "pay_1", refund_id="r1")
    assert refund(tx, cid, 2000, "pay_1", refund_id="r1").replayed
    assert totals(tx, cid, "pay_1") == ("inbox", 2000, 2000)


def test_an_unknown_payment_is_refused_naming_payment_id_and_nothing_changes(tx) -> None:
    cid = make_customer(tx)
    with pytest.raises(UnknownPayment) as caught:
        refund(tx, cid, 100, "pay_nobody_knows")
    assert (caught.value.field, caught.value.code) == ("payment_id", "UNKNOWN_PAYMENT")
    assert usd(tx, cid) == 0
    with tx() as s:
        assert s.scalars(select(RefundedPayment)).all() == []


def test_a_payment_of_another_customer_is_refused_like_an_unknown_one(tx) -> None:
    ada = make_customer(tx, email="ada@example.com")
    bob = make_customer(tx, email="bob@example.com")
    paid(tx, ada, 5000)
    with pytest.raises(UnknownPayment) as caught:
        refund(tx, bob, 100, "pay_1")
    assert caught.value.message == (
        f"payment_id: 'pay_1' is not a payment of customer {bob} known to this service"
    )
    assert usd(tx, bob) == 0


def test_a_charge_is_refundable_up_to_its_card_part_by_its_customer_only(tx) -> None:
    cid = make_customer(tx, 1000)
    with tx() as s:
        view = charges.charge(s, cid, 4000, "USD", "order_1")  # wallet 1000, card 3000
    charge_id = view.charge.charge_id
    with pytest.raises(RefundExceedsPayment) as caught:
        refund(tx, cid, 3001, charge_id)
    assert caught.value.details["remaining_amount"] == 3000
    refund(tx, cid, 3000, charge_id)
    assert totals(tx, cid, charge_id) == ("charge", 3000, 3000)
    other = make_customer(tx, email="eve@example.com")
    with pytest.raises(UnknownPayment):
        refund(tx, other, 1, charge_id)


def test_a_credited_top_up_is_refundable_up_to_the_payment(tx) -> None:
    payload = dodo_payment(payment_id="pay_top", total=2000, wallet_credit="2500")
    with tx() as s:
        outcome = inbox.process_event(s, store(tx, payload))
    assert outcome.status == "processed"
    cid = payload["data"]["customer"]["customer_id"]
    with pytest.raises(RefundExceedsPayment) as caught:
        refund(tx, cid, 2001, "pay_top")
    assert caught.value.details["remaining_amount"] == 2000
    refund(tx, cid, 2000, "pay_top")
    assert totals(tx, cid, "pay_top") == ("topup", 2000, 2000)


def test_a_dodo_payment_of_a_customer_matched_by_email_is_theirs(tx) -> None:
    cid = make_customer(tx, email="Grace@Example.com")
    store(
        tx, dodo_payment(payment_id="pay_g", customer_id="cus_dodo_side", email="grace@example.com")
    )
    refund(tx, cid, 2000, "pay_g")
    assert totals(tx, cid, "pay_g") == ("inbox", 2000, 2000)


def test_a_stripe_payment_naming_the_customer_in_metadata_is_theirs(tx) -> None:
    cid = make_customer(tx)
    intent = {
        "id": "pi_9",
        "object": "payment_intent",
        "amount": 1200,
        "amount_received": 1200,
        "currency": "usd",
        "metadata": {"wallet_customer_id": cid},
    }
    store(tx, stripe_event("payment_intent.succeeded", intent), provider="stripe")
    with pytest.raises(RefundExceedsPayment):
        refund(tx, cid, 1201, "pi_9")
    refund(tx, cid, 1200, "pi_9")
    assert usd(tx, cid) == 1200


def test_a_refund_in_another_currency_than_the_payment_is_refused(tx) -> None:
    cid = make_customer(tx)
    paid(tx, cid, 5000, currency="INR")
    with pytest.raises(ValidationFailed) as caught:
        refund(tx, cid, 100, "pay_1", currency="USD")
    assert caught.value.field == "currency"


def test_unknown_payments_opted_in_are_capped_per_refund(settings) -> None:
    opted = settings.with_overrides(
        allow_unknown_payment_refunds=True, max_unknown_payment_refund=1000
    )

    def tx():
        return transaction(opted)

    cid = make_customer(tx)
    with pytest.raises(RefundCapExceeded) as caught:
        refund(tx, cid, 1001, "pay_elsewhere", refund_id="r1")
    assert caught.value.details["setting"] == "MAX_UNKNOWN_PAYMENT_REFUND"
    refund(tx, cid, 1000, "pay_elsewhere", refund_id="r1")
    refund(tx, cid, 1000, "pay_elsewhere", refund_id="r2")
    assert totals(tx, cid, "pay_elsewhere") == ("unknown", None, 2000)
    # Once the payment is known, what was refunded already counts against it.
    paid(tx, cid, 2500, "pay_elsewhere")
    with pytest.raises(RefundExceedsPayment) as exceeded:
        refund(tx, cid, 501, "pay_elsewhere", refund_id="r3")
    assert exceeded.value.details["remaining_amount"] == 500
    refund(tx, cid, 500, "pay_elsewhere", refund_id="r3")
    assert totals(tx, cid, "pay_elsewhere") == ("inbox", 2500, 2500)


def test_opting_in_still_refuses_another_customers_payment(settings) -> None:
    opted = settings.with_overrides(
        allow_unknown_payment_refunds=True, max_unknown_payment_refund=1000
    )

    def tx():
        return transaction(opted)

    ada = make_customer(tx, email="ada@example.com")
    bob = make_customer(tx, email="bob@example.com")
    paid(tx, ada, 5000)
    with pytest.raises(UnknownPayment):
        refund(tx, bob, 100, "pay_1")


# -- the settings --------------------------------------------------------------------------


def test_unknown_payment_refunds_are_off_by_default_and_need_a_cap_when_on() -> None:
    from worker.config import ConfigError, Settings

    assert Settings.from_env({}).allow_unknown_payment_refunds is False
    on = Settings.from_env(
        {"ALLOW_UNKNOWN_PAYMENT_REFUNDS": "true", "MAX_UNKNOWN_PAYMENT_REFUND": "2500"}
    )
    assert (on.allow_unknown_payment_refunds, on.max_unknown_payment_refund) == (True, 2500)
    with pytest.raises(ConfigError, match=r"^MAX_UNKNOWN_PAYMENT_REFUND: required when"):
        Settings.from_env({"ALLOW_UNKNOWN_PAYMENT_REFUNDS": "yes"})
    with pytest.raises(ConfigError, match=r"^ALLOW_UNKNOWN_PAYMENT_REFUNDS: expected true or"):
        Settings.from_env({"ALLOW_UNKNOWN_PAYMENT_REFUNDS": "maybe"})


# -- migration 0012 ------------------------------------------------------------------------


@pytest.fixture
def fresh(backend: str, tmp_path) -> Iterator[Settings]:
    """A brand-new database of its own on ``backend`` (this test migrates it up and down)."""
    if backend == "sqlite":
        yield Settings(database_url=f"sqlite:///{tmp_path / 'fresh.db'}")
        return
    name, url = create_pg_database("bw_refund_mig")
    try:
        yield Settings(database_url=url)
    finally:
        get_engine(Settings(database_url=url)).dispose()
        drop_pg_database(name)


def test_refunds_made_before_0012_count_against_their_payment(fresh: Settings) -> None:
    def tx():
        return transaction(fresh)

    migrate.upgrade(fresh)
    cid = make_customer(tx)
    paid(tx, cid, 3000)
    refund(tx, cid, 1000, "pay_1", refund_id="r1")
    refund(tx, cid, 1500, "pay_1", refund_id="r2")
    # Back to before the table existed, with the refunds still in the ledger, and up again.
    migrate.downgrade(fresh, "0010")
    migrate.upgrade(fresh)
    assert totals(tx, cid, "pay_1") == ("unknown", None, 2500)
    with pytest.raises(RefundExceedsPayment) as caught:
        refund(tx, cid, 501, "pay_1", refund_id="r3")
    assert caught.value.details["remaining_amount"] == 500
    refund(tx, cid, 500, "pay_1", refund_id="r3")
    assert totals(tx, cid, "pay_1") == ("inbox", 3000, 3000)
    assert usd(tx, cid) == 3000
