"""The one posting pipeline: batches of legs, all or nothing, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from worker import ledger
from worker.errors import (
    DuplicateEntry,
    IdempotencyKeyReused,
    InsufficientBalance,
    ValidationFailed,
)
from worker.ledger import Leg, OnShort


def new_customer(tx, email: str = "ada@example.com") -> str:
    with tx() as s:
        customer, _ = ledger.create_customer(s, email=email, name="Ada")
        return customer.customer_id


def credit(cid: str, amount: int, **kw) -> Leg:
    return Leg(cid, "USD", amount, True, **kw)


def debit(cid: str, amount: int, **kw) -> Leg:
    return Leg(cid, "USD", amount, False, **kw)


def balance(tx, cid: str, currency: str = "USD") -> int:
    with tx() as s:
        return ledger.get_wallet(s, cid, currency).balance


def test_legs_on_one_wallet_chain_their_balances_in_order(tx) -> None:
    cid = new_customer(tx)
    with tx() as s:
        results = ledger.post(
            s, [credit(cid, 100), debit(cid, 30), debit(cid, 500, on_short=OnShort.TAKE)]
        )
    chain = [(r.entry.before_balance, r.entry.after_balance, r.shortfall) for r in results]
    assert chain == [(0, 100, 0), (100, 70, 0), (70, 0, 430)]
    assert results[-1].wallet.balance == 0
    with tx() as s:
        assert ledger.verify(s).ok


def test_a_refused_leg_refuses_the_whole_batch(tx) -> None:
    rich, poor = new_customer(tx, "rich@example.com"), new_customer(tx, "poor@example.com")
    with tx() as s:
        ledger.post(s, [credit(rich, 100)])
    with tx() as s, pytest.raises(InsufficientBalance) as refused:
        ledger.post(s, [debit(rich, 50), debit(poor, 1)])
    assert (refused.value.balance, refused.value.requested) == (0, 1)
    assert (balance(tx, rich), balance(tx, poor)) == (100, 0)


def test_bad_input_names_the_field_and_writes_nothing(tx) -> None:
    cid = new_customer(tx)
    cases = [
        (credit(cid, 0), "amount"),
        (credit(cid, 1.5), "amount"),  # type: ignore[arg-type]
        (Leg(cid, "EUR", 1, True), "currency"),
        (credit(cid, 1, event_type="gift"), "event_type"),
        (credit(cid, 1, key=ledger.client_key("")), "idempotency_key"),
        (credit(cid, 1, key=ledger.client_key("k" * 256)), "idempotency_key"),
        (credit(cid, 1, on_short=OnShort.TAKE), "on_short"),
    ]
    for leg, field in cases:
        with tx() as s, pytest.raises(ValidationFailed) as refused:
            ledger.post(s, [credit(cid, 5), leg])
        assert refused.value.field == field
    with tx() as s, pytest.raises(ValidationFailed, match="its own key"):
        key = ledger.client_key("same")
        ledger.post(s, [credit(cid, 1, key=key), credit(cid, 2, key=key)])
    assert balance(tx, cid) == 0


def test_a_lower_case_currency_is_the_configured_one(tx) -> None:
    cid = new_customer(tx)
    with tx() as s:
        [posted] = ledger.post(s, [Leg(cid, "usd", 5, True)])
    assert posted.entry.currency == "USD" and balance(tx, cid) == 5


def test_skip_answers_a_used_key_with_its_entry_and_posts_the_rest(tx) -> None:
    a, b = new_customer(tx, "a@example.com"), new_customer(tx, "b@example.com")
    key = ledger.system_key("batch", 1)
    with tx() as s:
        [first] = ledger.post(s, [credit(a, 10, key=key)])
    with tx() as s:
        results = ledger.post(s, [credit(a, 10, key=key), credit(b, 7, key=key)], duplicates="skip")
    assert isinstance(results[0], ledger.Replayed) and results[0].entry.id == first.entry.id
    assert isinstance(results[1], ledger.Posted)
    assert (balance(tx, a), balance(tx, b)) == (10, 7)


def test_every_path_compares_fingerprints(tx) -> None:
    cid = new_customer(tx)
    key = ledger.client_key("k")
    with tx() as s:
        ledger.post(s, [credit(cid, 10, key=key, reason="top-up")])
    with tx() as s, pytest.raises(DuplicateEntry):
        ledger.post(s, [credit(cid, 10, key=key, reason="top-up")])
    with tx() as s, pytest.raises(IdempotencyKeyReused) as reused:
        ledger.post(s, [credit(cid, 11, key=key, reason="other")])
    assert reused.value.fields == ["amount", "reason"]
    # A debit under the key differs in its direction, and a TAKE debit in its rule.
    with tx() as s, pytest.raises(IdempotencyKeyReused) as reused:
        ledger.post(s, [debit(cid, 10, key=key, reason="top-up", on_short=OnShort.TAKE)])
    assert "entry_type" in reused.value.fields


def test_the_same_key_in_each_namespace_is_two_keys(tx) -> None:
    cid = new_customer(tx)
    with tx() as s:
        mine, theirs = ledger.post(
            s,
            [
                credit(cid, 1, key=ledger.client_key("payment:pay_1")),
                credit(cid, 2, event_type="payment", key=ledger.system_key("payment", "pay_1")),
            ],
        )
    assert (mine.entry.key_scope, theirs.entry.key_scope) == ("client", "system")
    with tx() as s:
        assert ledger.find_entry(s, cid, "payment:pay_1").amount == 1
        assert ledger.find_entry(s, cid, ledger.system_key("payment", "pay_1")).amount == 2


def test_fingerprints_of_legs_that_refuse_a_shortfall_are_the_first_releases() -> None:
    """Keys stored before the pipeline existed still answer their retries."""
    leg = credit("cus_1", 10, reason="r", key=ledger.client_key("k"))
    legacy = json.dumps(["USD", 10, True, "merchant_adjustment", "r", None], separators=(",", ":"))
    assert leg.fingerprint() == hashlib.sha256(legacy.encode()).hexdigest()


def test_the_one_statement_path_and_the_transaction_write_the_same_rows(backend: str, tx) -> None:
    """PostgreSQL posts a lone refusing leg in one statement; a TAKE leg goes through the
    transaction: both rows carry the same columns, built by one row builder."""
    cid = new_customer(tx)
    with tx() as s:
        [fast] = ledger.post(s, [credit(cid, 50, key=ledger.client_key("a"), reason="x")])
    with tx() as s:
        [slow] = ledger.post(
            s, [debit(cid, 10, key=ledger.client_key("b"), reason="x", on_short=OnShort.TAKE)]
        )
    with tx() as s:
        stored = {e.idempotency_key: e for e in ledger.list_entries(s, cid)}
    columns = [c.key for c in type(stored["a"]).__mapper__.column_attrs]
    for posted in (fast, slow):
        row = stored[posted.entry.idempotency_key]
        assert {c: getattr(posted.entry, c) for c in columns if c != "created_at"} == {
            c: getattr(row, c) for c in columns if c != "created_at"
        }


LEGS = st.lists(
    st.tuples(
        st.sampled_from(["a", "b"]),
        st.integers(min_value=1, max_value=200),
        st.sampled_from(["credit", "refuse", "take"]),
    ),
    min_size=1,
    max_size=6,
)


@hypothesis_settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=st.lists(LEGS, min_size=1, max_size=5))
def test_any_batches_keep_balances_exact_and_the_ledger_verified(tx, batches) -> None:
    with tx() as s:
        ids = {}
        for name in ("a", "b"):
            found = ledger.find_customer_by_email(s, f"{name}@example.com")
            ids[name] = (
                found or ledger.create_customer(s, email=f"{name}@example.com", name=name)[0]
            ).customer_id
    with tx() as s:
        model = {n: ledger.get_wallet(s, cid, "USD").balance for n, cid in ids.items()}
    for batch in batches:
        after = dict(model)
        refused = False
        legs = []
        for name, amount, kind in batch:
            legs.append(
                credit(ids[name], amount)
                if kind == "credit"
                else debit(ids[name], amount, on_short=OnShort(kind))
            )
            if kind == "credit":
                after[name] += amount
            elif kind == "take":
                after[name] -= min(after[name], amount)
            elif after[name] < amount:
                refused = True
            else:
                after[name] -= amount
        try:
            with tx() as s:
                ledger.post(s, legs)
        except InsufficientBalance:
            assert refused
        else:
            assert not refused
            model = after
        for name, cid in ids.items():
            assert balance(tx, cid) == model[name]
    with tx() as s:
        assert ledger.verify(s).ok


def test_the_row_builder_fills_exactly_the_insert_columns() -> None:
    from datetime import UTC, datetime

    from worker.ledger import legs, pg

    row = legs.entry_row(
        credit("cus_1", 1),
        entry_id="wle_1",
        business_id="b",
        before=0,
        amount=1,
        now=datetime.now(UTC),
    )
    assert tuple(row) == pg.ENTRY_COLUMNS
