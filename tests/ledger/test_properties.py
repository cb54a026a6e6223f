"""Property-based: random credits, debits and retried keys across two currencies.

A tiny in-memory model predicts every outcome; after every step the wallet equals the model,
equals the sum of its entries, and ``verify`` passes. Duplicates never move a balance.
"""

from __future__ import annotations

import uuid

from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from sqlalchemy import case, func, select

from worker import ledger
from worker.config import Settings
from worker.errors import DuplicateEntry, IdempotencyKeyReused, InsufficientBalance
from worker.infra.db import transaction
from worker.models import LedgerEntry

CURRENCIES = ("USD", "INR")

operations = st.lists(
    st.tuples(
        st.booleans(),  # is_credit
        st.sampled_from(CURRENCIES),
        st.integers(min_value=1, max_value=1_000),
        st.one_of(st.none(), st.sampled_from([f"k{i}" for i in range(4)])),
    ),
    min_size=1,
    max_size=15,
)


def _ledger_sum(session, customer_id: str, currency: str) -> int:
    signed = case((LedgerEntry.is_credit, LedgerEntry.amount), else_=-LedgerEntry.amount)
    return session.scalar(
        select(func.coalesce(func.sum(signed), 0)).where(
            LedgerEntry.customer_id == customer_id, LedgerEntry.currency == currency
        )
    )


@hyp_settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=operations)
def test_random_sequences_keep_balance_equal_to_ledger(settings: Settings, ops) -> None:
    with transaction(settings) as s:
        customer, _ = ledger.create_customer(s, email=f"{uuid.uuid4().hex}@p.io", name="P")
    cid = customer.customer_id
    balances = dict.fromkeys(CURRENCIES, 0)
    used: dict[str, tuple[str, int, bool]] = {}

    for is_credit, currency, amount, key in ops:
        params = (currency, amount, is_credit)
        if key is not None and key in used:
            expected: type[Exception] | None = (
                DuplicateEntry if used[key] == params else IdempotencyKeyReused
            )
        elif not is_credit and balances[currency] < amount:
            expected = InsufficientBalance
        else:
            expected = None
        before = dict(balances)
        try:
            with transaction(settings) as s:
                ledger.post_entry(
                    s,
                    customer_id=cid,
                    currency=currency,
                    amount=amount,
                    is_credit=is_credit,
                    idempotency_key=key,
                )
        except (DuplicateEntry, IdempotencyKeyReused, InsufficientBalance) as exc:
            assert type(exc) is expected, (params, key, exc)
        else:
            assert expected is None, (params, key)
            balances[currency] += amount if is_credit else -amount
            if key is not None:
                used[key] = params

        if expected is not None:
            assert balances == before
        with transaction(settings) as s:
            for c in CURRENCIES:
                assert ledger.get_wallet(s, cid, c).balance == balances[c]
                assert _ledger_sum(s, cid, c) == balances[c]
            report = ledger.verify(s)
            assert report.ok, report.problems
