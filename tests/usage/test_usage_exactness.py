"""Exact accrual: for any prices, quantities and batching, nothing is rounded or lost."""

from __future__ import annotations

import itertools
from decimal import Decimal

from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from tests.support.usage import accounting, assert_exact, new_customer
from worker import usage
from worker.ledger.schemas import USAGE_SCALE
from worker.usage.pricing import InvalidQuantity, Price, Pricing

_counter = itertools.count()

prices = st.one_of(
    st.sampled_from(["0.0003", "1.3333", "0.002", "0.3", "7", "0.000000000001"]),
    st.decimals(min_value=0, max_value=100, places=4).map(str),
)
quantities = st.one_of(
    st.integers(min_value=0, max_value=10**4),
    st.decimals(min_value=0, max_value=10**4, places=3).map(str),
)


@hsettings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    unit_amounts=st.lists(prices, min_size=1, max_size=3),
    events=st.lists(st.tuples(st.integers(0, 2), quantities), min_size=1, max_size=30),
    batch_sizes=st.lists(st.integers(1, 12), min_size=1, max_size=5),
    balance=st.one_of(st.just(10**12), st.integers(0, 5000)),
)
def test_any_batching_bills_the_exact_sum(tx, unit_amounts, events, batch_sizes, balance):
    pricing = Pricing(
        prices={f"p{i}": Price(f"p{i}", "USD", Decimal(a), "q") for i, a in enumerate(unit_amounts)}
    )
    n = next(_counter)
    with tx() as s:
        batched = new_customer(s, f"batched{n}@example.com", credit=balance)
        single = new_customer(s, f"single{n}@example.com", credit=balance)
    expected = Decimal(0)
    for customer_id, tag in ((batched, "b"), (single, "s")):
        new = [
            usage.NewEvent(
                f"{tag}{n}-{i}",
                customer_id,
                f"p{which % len(unit_amounts)}",
                metadata={"q": quantity},
            )
            for i, (which, quantity) in enumerate(events)
        ]
        with tx() as s:
            usage.ingest(s, new, pricing=pricing)
    refused = 0
    for which, quantity in events:
        cost = Decimal(unit_amounts[which % len(unit_amounts)]) * Decimal(str(quantity))
        if cost * USAGE_SCALE == int(cost * USAGE_SCALE):
            expected += cost
        else:  # finer than 10**-12 of a cent: marked invalid, never rounded
            refused += 1

    # The batched customer's events are billed in the generated batch sizes, the other's at once
    # (batches take the oldest pending events first, so the first customer's go first).
    sizes = itertools.cycle(batch_sizes)
    left = len(events) - refused
    while left > 0:
        with tx() as s:
            billed = usage.bill_batch(s, limit=min(next(sizes), left)).events
        assert billed > 0
        left -= billed
    with tx() as s:
        usage.bill_batch(s, limit=len(events))
        invalid = usage.list_events(s, customer_id=batched, status="invalid", page_size=100)
        assert len(invalid) == refused
    with tx() as s:
        a, b = accounting(s, batched), accounting(s, single)
    for acc in (a, b):
        assert acc["cost"] == expected
        assert_exact(acc)
        assert acc["debited"] == min(balance, int(expected))
        assert acc["balance"] == balance - acc["debited"] >= 0
    assert (a["debited"], a["unbilled"], a["remainder"]) == (
        b["debited"],
        b["unbilled"],
        b["remainder"],
    )


@given(
    unit=st.decimals(min_value=0, max_value=10**6, places=12),
    quantity=st.decimals(min_value=0, max_value=10**6, places=6),
)
def test_cost_is_exact_or_refused_never_rounded(unit, quantity):
    price = Price("x", "USD", unit, "q")
    exact = unit * quantity
    try:
        scaled = price.cost_scaled({"q": str(quantity)})
    except InvalidQuantity as refused:
        assert exact * USAGE_SCALE != int(exact * USAGE_SCALE) or "maximum" in str(refused)
    else:
        assert Decimal(scaled) / USAGE_SCALE == exact


def test_float_quantities_are_read_as_written():
    price = Price("x", "USD", Decimal("0.0003"), "q")
    assert price.cost_scaled({"q": 0.1}) == 30_000_000  # 0.00003 minor units, not 0.1's binary
    assert price.cost_scaled({"q": "1e3"}) == 300_000_000_000
