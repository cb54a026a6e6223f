"""Wallet-first charges, reversals and refunds to wallet: the core, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import select

from tests.support.charges import assert_verified, charged, count, make_customer, paid, usd
from worker import charges, ledger
from worker.errors import (
    ChargeNotFound,
    CustomerNotFound,
    IdempotencyKeyReused,
    InsufficientBalance,
    InvalidAmount,
    RefundCapExceeded,
    RefundExceedsPayment,
    ReversalExceedsCharge,
    UnsupportedCurrency,
    ValidationFailed,
)
from worker.infra.db import transaction
from worker.models import LedgerEntry, WalletCharge, new_id

# -- charges -------------------------------------------------------------------------------


def test_charge_fully_covered_by_wallet_debits_the_amount(tx) -> None:
    cid = make_customer(tx, 5000)
    with tx() as s:
        view = charges.charge(s, cid, 3000, "USD", "order_1")
    assert (view.charge.applied_amount, view.remaining_amount, view.wallet.balance) == (
        3000,
        0,
        2000,
    )
    [entry] = view.entries
    assert (entry.amount, entry.is_credit, entry.event_type, entry.reference_object_id) == (
        3000,
        False,
        "payment",
        "order_1",
    )
    assert view.charge.ledger_entry_id == entry.id
    assert view.charge.idempotency_key == "charge:order_1"
    assert usd(tx, cid) == 2000
    assert_verified(tx)


def test_charge_partly_covered_takes_the_whole_balance(tx) -> None:
    cid = make_customer(tx, 1200)
    with tx() as s:
        view = charges.charge(s, cid, 3000, "usd", "order_1")
    assert (view.charge.applied_amount, view.remaining_amount, view.wallet.balance) == (
        1200,
        1800,
        0,
    )
    assert [e.amount for e in view.entries] == [1200]
    assert_verified(tx)


def test_charge_on_empty_wallet_applies_zero_and_writes_no_entry(tx) -> None:
    cid = make_customer(tx)
    with tx() as s:
        view = charges.charge(s, cid, 3000, "USD", "order_1")
    assert (view.charge.applied_amount, view.remaining_amount) == (0, 3000)
    assert view.entries == [] and view.charge.ledger_entry_id is None
    assert count(tx, LedgerEntry) == 0
    with tx() as s:
        shown = charges.get_charge(s, cid, view.charge.charge_id)
    assert (shown.charge.applied_amount, shown.remaining_amount, shown.entries) == (0, 3000, [])


def test_retried_charge_returns_the_same_charge_without_a_second_debit(tx) -> None:
    cid = make_customer(tx, 5000)
    with tx() as s:
        first = charges.charge(s, cid, 2000, "USD", "order_1", reason="Order 1")
    with tx() as s:
        again = charges.charge(s, cid, 2000, "USD", "order_1", reason="Order 1")
    assert again.replayed and not first.replayed
    assert again.charge.charge_id == first.charge.charge_id
    assert again.charge.applied_amount == 2000
    assert usd(tx, cid) == 3000
    assert count(tx, LedgerEntry, event_type="payment") == 1
    assert count(tx, WalletCharge) == 1


def test_retry_of_zero_charge_after_top_up_still_answers_zero(tx) -> None:
    cid = make_customer(tx)
    with tx() as s:
        first = charges.charge(s, cid, 2000, "USD", "order_1")
        ledger.post_entry(s, customer_id=cid, currency="USD", amount=5000, is_credit=True)
    with tx() as s:
        again = charges.charge(s, cid, 2000, "USD", "order_1")
    assert again.charge.charge_id == first.charge.charge_id
    assert (again.charge.applied_amount, again.remaining_amount, again.wallet.balance) == (
        0,
        2000,
        5000,
    )


def test_same_key_with_different_parameters_is_refused_naming_them(tx) -> None:
    cid = make_customer(tx, 5000)
    with tx() as s:
        charges.charge(s, cid, 2000, "USD", "order_1")
    with tx() as s, pytest.raises(IdempotencyKeyReused) as caught:
        charges.charge(s, cid, 2500, "INR", "order_1", allow_partial=False)
    assert caught.value.fields == ["amount", "currency", "allow_partial"]
    with tx() as s:
        charges.charge(s, cid, 2000, "USD", "order_2", idempotency_key="k")
    with tx() as s, pytest.raises(IdempotencyKeyReused) as caught:
        charges.charge(s, cid, 2000, "USD", "order_3", idempotency_key="k")
    assert caught.value.fields == ["order_id"]
    assert usd(tx, cid) == 1000


def test_a_client_key_shaped_like_another_orders_default_is_the_clients_own(tx) -> None:
    cid = make_customer(tx, 5000)
    with tx() as s:
        mine = charges.charge(s, cid, 1000, "USD", "order_2", idempotency_key="charge:order_1")
    with tx() as s:
        # order_1's own charge is not blocked by the client's look-alike key ...
        theirs = charges.charge(s, cid, 2000, "USD", "order_1")
    with tx() as s:
        # ... and naming this order's default key explicitly means that same charge.
        again = charges.charge(s, cid, 2000, "USD", "order_1", idempotency_key="charge:order_1")
    assert mine.charge.charge_id != theirs.charge.charge_id
    assert again.replayed and again.charge.charge_id == theirs.charge.charge_id
    assert usd(tx, cid) == 2000


def test_explicit_keys_make_separate_charges_for_one_order(tx) -> None:
    cid = make_customer(tx, 5000)
    with tx() as s:
        a = charges.charge(s, cid, 1000, "USD", "order_1", idempotency_key="attempt-1")
        b = charges.charge(s, cid, 1000, "USD", "order_1", idempotency_key="attempt-2")
    assert a.charge.charge_id != b.charge.charge_id
    assert usd(tx, cid) == 3000
    assert_verified(tx)


def test_all_or_nothing_charge_refuses_and_leaves_the_key_unused(tx) -> None:
    cid = make_customer(tx, 1000)
    with tx() as s, pytest.raises(InsufficientBalance) as caught:
        charges.charge(s, cid, 3000, "USD", "order_1", allow_partial=False)
    assert (caught.value.balance, caught.value.requested) == (1000, 3000)
    assert count(tx, WalletCharge) == 0
    assert usd(tx, cid) == 1000
    with tx() as s:
        ledger.post_entry(s, customer_id=cid, currency="USD", amount=2000, is_credit=True)
        view = charges.charge(s, cid, 3000, "USD", "order_1", allow_partial=False)
    assert (view.charge.applied_amount, view.remaining_amount, view.wallet.balance) == (3000, 0, 0)
    assert_verified(tx)


def test_all_or_nothing_refusal_keeps_the_callers_transaction_usable(tx) -> None:
    cid = make_customer(tx, 1000)
    with tx() as s:
        with pytest.raises(InsufficientBalance):
            charges.charge(s, cid, 3000, "USD", "order_1", allow_partial=False)
        view = charges.charge(s, cid, 500, "USD", "order_2")
    assert view.charge.applied_amount == 500
    assert count(tx, WalletCharge) == 1
    assert usd(tx, cid) == 500


@pytest.mark.parametrize(
    ("kwargs", "error", "field"),
    [
        ({"amount": 0}, InvalidAmount, "amount"),
        ({"amount": 10.0}, InvalidAmount, "amount"),
        ({"currency": "EUR"}, UnsupportedCurrency, "currency"),
        ({"order_id": ""}, ValidationFailed, "order_id"),
        ({"order_id": "x" * 201}, ValidationFailed, "order_id"),
        ({"idempotency_key": " "}, ValidationFailed, "idempotency_key"),
        ({"allow_partial": "no"}, ValidationFailed, "allow_partial"),
    ],
)
def test_bad_charge_input_names_the_field(tx, kwargs, error, field) -> None:
    cid = make_customer(tx, 1000)
    args = {"amount": 100, "currency": "USD", "order_id": "order_1", **kwargs}
    with tx() as s, pytest.raises(error) as caught:
        charges.charge(s, cid, **args)
    assert caught.value.field == field
    assert count(tx, WalletCharge) == 0


def test_charge_for_unknown_customer_is_not_found(tx) -> None:
    with tx() as s, pytest.raises(CustomerNotFound):
        charges.charge(s, "cus_missing", 100, "USD", "order_1")


# -- reversals -----------------------------------------------------------------------------


def test_full_reversal_credits_back_the_applied_amount(tx) -> None:
    cid, charge_id = charged(tx, 1200, 3000)
    with tx() as s:
        reversal = charges.reverse(s, cid, charge_id, reason="card declined")
    assert reversal.entry is not None
    assert (reversal.entry.amount, reversal.entry.event_type, reversal.entry.is_credit) == (
        1200,
        "payment_reversal",
        True,
    )
    assert reversal.entry.reference_object_id == "order_1"
    view = reversal.view
    assert (view.charge.reversed_amount, view.reversible_amount, view.wallet.balance) == (
        1200,
        0,
        1200,
    )
    assert [(e.event_type, e.amount) for e in view.entries] == [
        ("payment", 1200),
        ("payment_reversal", 1200),
    ]
    assert_verified(tx)


def test_partial_reversals_add_up_to_at_most_the_applied_amount(tx) -> None:
    cid, charge_id = charged(tx, 5000, 3000)
    with tx() as s:
        charges.reverse(s, cid, charge_id, amount=1000)
    with tx() as s:
        charges.reverse(s, cid, charge_id, amount=1500)
    with tx() as s, pytest.raises(ReversalExceedsCharge) as caught:
        charges.reverse(s, cid, charge_id, amount=501)
    assert caught.value.details["reversible_amount"] == 500
    with tx() as s:
        last = charges.reverse(s, cid, charge_id)
    assert last.entry.amount == 500
    assert (last.view.charge.reversed_amount, usd(tx, cid)) == (3000, 5000)
    assert [e.amount for e in last.view.entries] == [3000, 1000, 1500, 500]
    assert_verified(tx)


def test_repeated_full_reversal_is_a_no_op(tx) -> None:
    cid, charge_id = charged(tx, 5000, 3000)
    with tx() as s:
        charges.reverse(s, cid, charge_id)
    with tx() as s:
        again = charges.reverse(s, cid, charge_id)
    assert again.entry is None
    assert again.view.charge.reversed_amount == 3000
    assert usd(tx, cid) == 5000
    assert count(tx, LedgerEntry, event_type="payment_reversal") == 1


def test_reversing_a_zero_charge_is_a_no_op_but_an_amount_is_refused(tx) -> None:
    cid, charge_id = charged(tx, 0, 3000)
    with tx() as s:
        assert charges.reverse(s, cid, charge_id).entry is None
    with tx() as s, pytest.raises(ReversalExceedsCharge):
        charges.reverse(s, cid, charge_id, amount=1)
    assert count(tx, LedgerEntry) == 0


def test_partial_reversal_with_a_key_is_credited_once(tx) -> None:
    cid, charge_id = charged(tx, 5000, 3000)
    for _ in range(3):
        with tx() as s:
            reversal = charges.reverse(s, cid, charge_id, amount=700, idempotency_key="r1")
    assert reversal.replayed and reversal.entry is None
    assert reversal.view.charge.reversed_amount == 700
    with tx() as s, pytest.raises(IdempotencyKeyReused) as caught:
        charges.reverse(s, cid, charge_id, amount=800, idempotency_key="r1")
    assert caught.value.fields == ["amount"]
    assert usd(tx, cid) == 2700
    assert_verified(tx)


def test_reversal_of_another_customers_charge_is_not_found(tx) -> None:
    _, charge_id = charged(tx, 5000, 3000)
    other = make_customer(tx, 0, email="bob@example.com")
    with tx() as s, pytest.raises(ChargeNotFound):
        charges.reverse(s, other, charge_id)
    with tx() as s, pytest.raises(ChargeNotFound):
        charges.get_charge(s, other, charge_id)


def test_charge_entries_do_not_mix_with_other_charges_of_the_same_order(tx) -> None:
    cid = make_customer(tx, 5000)
    with tx() as s:
        a = charges.charge(s, cid, 1000, "USD", "order_1", idempotency_key="a")
        b = charges.charge(s, cid, 2000, "USD", "order_1", idempotency_key="b")
        charges.reverse(s, cid, a.charge.charge_id)
    with tx() as s:
        shown = charges.get_charge(s, cid, b.charge.charge_id)
    assert [(e.event_type, e.amount) for e in shown.entries] == [("payment", 2000)]


# -- refunds to wallet ---------------------------------------------------------------------


def test_refund_to_wallet_is_credited_once_per_refund_id(tx) -> None:
    cid = make_customer(tx)
    paid(tx, cid, 5000)
    for _ in range(2):
        with tx() as s:
            refund = charges.refund_to_wallet(
                s, cid, 2500, "USD", "pay_1", refund_id="rfd_1", reason="returned"
            )
    assert refund.replayed
    assert (refund.entry.event_type, refund.entry.reference_object_id) == ("refund", "pay_1")
    assert refund.entry.idempotency_key == "wallet_refund:rfd_1"
    with tx() as s:
        charges.refund_to_wallet(s, cid, 2500, "USD", "pay_1", refund_id="rfd_2")
    assert usd(tx, cid) == 5000
    assert count(tx, LedgerEntry, event_type="refund") == 2
    assert_verified(tx)


def test_refund_without_id_is_credited_once_per_payment_and_amount(tx) -> None:
    cid = make_customer(tx)
    paid(tx, cid, 5000)
    with tx() as s:
        charges.refund_to_wallet(s, cid, 1000, "USD", "pay_1")
        again = charges.refund_to_wallet(s, cid, 1000, "USD", "pay_1")
        charges.refund_to_wallet(s, cid, 400, "USD", "pay_1")
    assert again.replayed
    assert usd(tx, cid) == 1400


def test_refund_id_reused_for_another_payment_is_refused_naming_payment_id(tx) -> None:
    cid = make_customer(tx)
    paid(tx, cid, 5000, "pay_1")
    paid(tx, cid, 5000, "pay_2")
    with tx() as s:
        charges.refund_to_wallet(s, cid, 1000, "USD", "pay_1", refund_id="rfd_1")
    with tx() as s, pytest.raises(IdempotencyKeyReused) as caught:
        charges.refund_to_wallet(s, cid, 1000, "USD", "pay_2", refund_id="rfd_1")
    assert caught.value.fields == ["payment_id"]
    assert caught.value.details["idempotency_key"] == "rfd_1"


def test_refund_above_the_cap_is_refused_naming_the_cap(settings) -> None:
    capped = settings.with_overrides(wallet_refund_max=10_000)

    def tx():
        return transaction(capped)

    cid = make_customer(tx)
    paid(tx, cid, 50_000)
    with tx() as s, pytest.raises(RefundCapExceeded) as caught:
        charges.refund_to_wallet(s, cid, 10_001, "USD", "pay_1", refund_id="rfd_1")
    assert caught.value.field == "amount"
    assert caught.value.details["cap"] == 10_000
    assert "WALLET_REFUND_MAX" in caught.value.message
    with tx() as s:
        charges.refund_to_wallet(s, cid, 10_000, "USD", "pay_1", refund_id="rfd_2")
    assert usd(tx, cid) == 10_000


def test_refund_credited_before_the_cap_was_lowered_replays(settings) -> None:
    def tx(cap=None):
        return transaction(settings.with_overrides(wallet_refund_max=cap))

    cid = make_customer(tx)
    paid(tx, cid, 5000)
    with tx() as s:
        charges.refund_to_wallet(s, cid, 5000, "USD", "pay_1", refund_id="rfd_1")
    with tx(cap=1000) as s:
        assert charges.refund_to_wallet(s, cid, 5000, "USD", "pay_1", refund_id="rfd_1").replayed
    assert usd(tx, cid) == 5000


# -- a property over arbitrary sequences ---------------------------------------------------

operations = st.lists(
    st.one_of(
        st.tuples(st.just("charge"), st.integers(1, 4000), st.integers(0, 3)),
        st.tuples(st.just("reverse"), st.integers(0, 3000), st.integers(0, 3)),
        st.tuples(st.just("refund"), st.integers(1, 3000), st.integers(0, 3)),
    ),
    max_size=12,
)


@hsettings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=operations, start=st.integers(0, 6000))
def test_any_sequence_keeps_wallet_and_charges_consistent(tx, ops, start) -> None:
    with tx() as s:
        customer, _ = ledger.create_customer(s, email=f"p{new_id('x')}@example.com", name="P")
        cid = customer.customer_id
        if start:
            ledger.post_entry(s, customer_id=cid, currency="USD", amount=start, is_credit=True)
    for n in range(4):
        paid(tx, cid, 4000, f"pay_{cid}_{n}")
    refunded = [0] * 4
    expected = start
    for op, amount, n in ops:
        with tx() as s:
            if op == "charge":
                before = ledger.get_wallet(s, cid, "USD").balance
                try:
                    view = charges.charge(s, cid, amount, "USD", f"order_{n}")
                except IdempotencyKeyReused as reused:
                    assert reused.fields == ["amount"]
                    continue
                if not view.replayed:
                    assert view.charge.applied_amount == min(before, amount)
                    expected -= view.charge.applied_amount
            elif op == "reverse":
                record = s.scalar(
                    select(WalletCharge).where(
                        WalletCharge.customer_id == cid, WalletCharge.order_id == f"order_{n}"
                    )
                )
                if record is None:
                    continue
                left = record.applied_amount - record.reversed_amount
                try:
                    reversal = charges.reverse(s, cid, record.charge_id, amount=amount or None)
                except ReversalExceedsCharge:
                    assert amount > left
                    continue
                expected += reversal.entry.amount if reversal.entry else 0
            else:
                try:
                    refund = charges.refund_to_wallet(s, cid, amount, "USD", f"pay_{cid}_{n}")
                except RefundExceedsPayment as exceeded:
                    assert amount > exceeded.details["remaining_amount"] == 4000 - refunded[n]
                    continue
                if not refund.replayed:
                    expected += amount
                    refunded[n] += amount
                assert refunded[n] <= 4000
    assert usd(tx, cid) == expected >= 0
    with tx() as s:
        for record in s.scalars(select(WalletCharge).where(WalletCharge.customer_id == cid)):
            assert 0 <= record.reversed_amount <= record.applied_amount
            assert record.applied_amount <= record.requested_amount
    assert_verified(tx)
