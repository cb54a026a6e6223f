"""Concurrent charges, reversals and refunds on one wallet never over-apply or over-reverse.

Threads, each with its own transaction, start together on a barrier. On SQLite the write lock
serialises them; on PostgreSQL they really race, and the deterministic tests below hold one
transaction open until the other is seen waiting on a lock (pg_stat_activity), so the losing
path is exercised every time rather than by luck.
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from tests.support.charges import assert_verified, charged, make_customer, paid, usd
from tests.support.racing import behind, together
from worker import charges
from worker.charges import ChargeView
from worker.errors import RefundExceedsPayment, ReversalExceedsCharge
from worker.models import LedgerEntry

THREADS = 8


def entries(tx, event_type: str) -> list[int]:
    with tx() as s:
        return list(
            s.scalars(select(LedgerEntry.amount).where(LedgerEntry.event_type == event_type))
        )


def test_concurrent_charges_never_apply_more_than_the_balance(settings, tx) -> None:
    cid = make_customer(tx, 10_000)
    results = together(
        settings, THREADS, lambda s, i: charges.charge(s, cid, 3000, "USD", f"order_{i}")
    )
    assert all(isinstance(r, ChargeView) for r in results), results
    applied = [r.charge.applied_amount for r in results]
    assert sum(applied) == 10_000  # min(starting balance, total asked)
    assert all(r.remaining_amount == 3000 - r.charge.applied_amount for r in results)
    assert usd(tx, cid) == 0
    assert sorted(entries(tx, "payment")) == sorted(a for a in applied if a)
    assert_verified(tx)


def test_concurrent_retries_of_one_charge_debit_once(settings, tx) -> None:
    cid = make_customer(tx, 10_000)
    results = together(settings, THREADS, lambda s, i: charges.charge(s, cid, 3000, "USD", "o1"))
    assert all(isinstance(r, ChargeView) for r in results), results
    assert len({r.charge.charge_id for r in results}) == 1
    assert sum(not r.replayed for r in results) == 1
    assert usd(tx, cid) == 7000
    assert entries(tx, "payment") == [3000]
    assert_verified(tx)


def test_concurrent_partial_reversals_never_exceed_the_applied_amount(settings, tx) -> None:
    cid, charge_id = charged(tx, 5000, 5000)
    results = together(settings, THREADS, lambda s, i: charges.reverse(s, cid, charge_id, 1000))
    refused = [r for r in results if isinstance(r, ReversalExceedsCharge)]
    assert len(refused) == THREADS - 5
    assert len(results) - len(refused) == 5
    assert entries(tx, "payment_reversal") == [1000] * 5
    assert usd(tx, cid) == 5000
    assert_verified(tx)


def test_concurrent_full_reversals_credit_once(settings, tx) -> None:
    cid, charge_id = charged(tx, 2500, 4000)
    results = together(settings, THREADS, lambda s, i: charges.reverse(s, cid, charge_id))
    assert sum(r.entry is not None for r in results) == 1
    assert entries(tx, "payment_reversal") == [2500]
    assert usd(tx, cid) == 2500
    assert_verified(tx)


def test_concurrent_refunds_with_one_refund_id_credit_once(settings, tx) -> None:
    cid = make_customer(tx)
    paid(tx, cid, 1500)
    results = together(
        settings,
        THREADS,
        lambda s, i: charges.refund_to_wallet(s, cid, 1500, "USD", "pay_1", refund_id="rfd_1"),
    )
    assert sum(not r.replayed for r in results) == 1, results
    assert usd(tx, cid) == 1500
    assert_verified(tx)


def test_concurrent_refunds_of_one_payment_never_exceed_it(settings, tx) -> None:
    cid = make_customer(tx)
    paid(tx, cid, 5000)
    results = together(
        settings,
        THREADS,
        lambda s, i: charges.refund_to_wallet(s, cid, 1500, "USD", "pay_1", refund_id=f"r{i}"),
    )
    refused = [r for r in results if isinstance(r, RefundExceedsPayment)]
    assert len(refused) == THREADS - 3, results
    assert {r.details["remaining_amount"] for r in refused} == {500}
    assert entries(tx, "refund") == [1500] * 3
    assert usd(tx, cid) == 4500
    assert_verified(tx)


# -- PostgreSQL: the loser really waits on the winner's lock -------------------------------


@pytest.mark.parametrize("backend", ["postgresql"])
def test_racing_retry_waits_for_the_first_charge_and_returns_it(settings, tx) -> None:
    cid = make_customer(tx, 10_000)
    first, second = behind(
        settings,
        lambda s: charges.charge(s, cid, 3000, "USD", "o1"),
        lambda s: charges.charge(s, cid, 3000, "USD", "o1"),
    )
    assert isinstance(second, ChargeView), second
    assert second.replayed and second.charge.charge_id == first.charge.charge_id
    assert usd(tx, cid) == 7000
    assert entries(tx, "payment") == [3000]


@pytest.mark.parametrize("backend", ["postgresql"])
def test_racing_charge_takes_only_what_the_first_left(settings, tx) -> None:
    cid = make_customer(tx, 5000)
    first, second = behind(
        settings,
        lambda s: charges.charge(s, cid, 3000, "USD", "o1"),
        lambda s: charges.charge(s, cid, 3000, "USD", "o2"),
    )
    assert (first.charge.applied_amount, second.charge.applied_amount) == (3000, 2000)
    assert usd(tx, cid) == 0
    assert_verified(tx)


@pytest.mark.parametrize("backend", ["postgresql"])
def test_racing_reversal_sees_the_first_and_is_refused(settings, tx) -> None:
    cid, charge_id = charged(tx, 5000, 3000)
    _, second = behind(
        settings,
        lambda s: charges.reverse(s, cid, charge_id),
        lambda s: charges.reverse(s, cid, charge_id, amount=1),
    )
    assert isinstance(second, ReversalExceedsCharge), second
    with tx() as s:
        assert (
            s.scalar(
                select(func.sum(LedgerEntry.amount)).where(
                    LedgerEntry.event_type == "payment_reversal"
                )
            )
            == 3000
        )
    assert usd(tx, cid) == 5000


@pytest.mark.parametrize("backend", ["postgresql"])
def test_racing_first_refunds_of_a_payment_wait_on_its_row(settings, tx) -> None:
    """Neither refund has a totals row to lock yet: the second waits on the first's INSERT."""
    cid = make_customer(tx)
    paid(tx, cid, 3000)
    first, second = behind(
        settings,
        lambda s: charges.refund_to_wallet(s, cid, 2000, "USD", "pay_1", refund_id="r1"),
        lambda s: charges.refund_to_wallet(s, cid, 2000, "USD", "pay_1", refund_id="r2"),
    )
    assert not first.replayed
    assert isinstance(second, RefundExceedsPayment), second
    assert second.details["remaining_amount"] == 1000
    assert entries(tx, "refund") == [2000]
