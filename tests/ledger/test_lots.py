"""Credit lots on SQLite and PostgreSQL: the spending order, debits spanning lots, expiry exactly
once (overlapping runs, racing debits, processes), and ``verify`` catching a lot that drifts."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from tests.support.cli import run_cli_process
from worker import ledger
from worker.config import Settings
from worker.errors import (
    DuplicateEntry,
    IdempotencyKeyReused,
    InsufficientBalance,
    ValidationFailed,
)
from worker.ledger import expiry
from worker.ledger.keys import system_key
from worker.models import CreditLot, LedgerEntry, LotConsumption, utcnow


@pytest.fixture
def customer_id(tx) -> str:
    with tx() as s:
        customer, _ = ledger.create_customer(s, email="lots@example.com", name="Lots")
        return customer.customer_id


def credit(tx, customer_id: str, amount: int, **kw) -> ledger.Posted:
    leg = ledger.Leg(customer_id, kw.pop("currency", "USD"), amount, is_credit=True, **kw)
    with tx() as s:
        return ledger.post(s, [leg])[0]


def debit(tx, customer_id: str, amount: int, **kw) -> ledger.Posted | None:
    leg = ledger.Leg(customer_id, kw.pop("currency", "USD"), amount, is_credit=False, **kw)
    with tx() as s:
        return ledger.post(s, [leg])[0]


def lot_of(tx, entry_id: str) -> CreditLot:
    with tx() as s:
        return s.scalars(select(CreditLot).where(CreditLot.entry_id == entry_id)).one()


def consumed(tx, entry_id: str) -> list[tuple[str, int]]:
    with tx() as s:
        rows = s.execute(
            select(LotConsumption.lot_id, LotConsumption.amount, CreditLot.seq)
            .join(CreditLot, CreditLot.id == LotConsumption.lot_id)
            .where(LotConsumption.entry_id == entry_id)
        )
        return sorted((r.lot_id, r.amount) for r in rows)


def soon(seconds: float) -> object:
    return utcnow() + timedelta(seconds=seconds)


def wait_until(moment) -> None:  # type: ignore[no-untyped-def]
    while utcnow() <= moment:
        time.sleep(0.02)


def check(tx) -> None:
    with tx() as s:
        report = ledger.verify(s)
    assert report.ok, report.problems


def test_debits_spend_soonest_expiry_then_promotional_then_oldest(tx, customer_id: str) -> None:
    never_paid = credit(tx, customer_id, 100)
    never_promo = credit(tx, customer_id, 100, category="promotional")
    in_10d_paid = credit(tx, customer_id, 100, expires_at=soon(10 * 86400))
    in_10d_promo = credit(tx, customer_id, 100, expires_at=soon(10 * 86400), category="promotional")
    in_5d_paid = credit(tx, customer_id, 100, expires_at=soon(5 * 86400))
    older_never_paid = never_paid  # credited first: spent before a later never-expiring paid lot
    newer_never_paid = credit(tx, customer_id, 100)
    order = [
        in_5d_paid,
        in_10d_promo,
        in_10d_paid,
        never_promo,
        older_never_paid,
        newer_never_paid,
    ]
    lots = [lot_of(tx, p.entry.id).id for p in order]
    # One debit spanning the first three lots and half the fourth.
    spent = debit(tx, customer_id, 350)
    assert consumed(tx, spent.entry.id) == sorted(
        [(lots[0], 100), (lots[1], 100), (lots[2], 100), (lots[3], 50)]
    )
    rest = debit(tx, customer_id, 250)
    assert consumed(tx, rest.entry.id) == sorted([(lots[3], 50), (lots[4], 100), (lots[5], 100)])
    with tx() as s:
        remaining = s.scalar(select(func.sum(CreditLot.remaining)))
        assert remaining == 0 == ledger.get_wallet(s, customer_id, "USD").balance
    check(tx)


def test_credit_creates_its_lot_with_category_and_expiry(tx, customer_id: str) -> None:
    expires = soon(3600)
    posted = credit(tx, customer_id, 500, expires_at=expires, category="promotional")
    lot = lot_of(tx, posted.entry.id)
    assert (lot.amount, lot.remaining, lot.category) == (500, 500, "promotional")
    assert abs((lot.expires_at - expires).total_seconds()) < 0.001
    assert lot.currency == "USD" and lot.customer_id == customer_id
    assert posted.entry.actor == "system"


def test_actor_is_recorded_on_the_entry(tx, customer_id: str) -> None:
    posted = credit(tx, customer_id, 5, actor="key_abc")
    with tx() as s:
        assert s.scalar(select(LedgerEntry.actor).where(LedgerEntry.id == posted.entry.id)) == (
            "key_abc"
        )


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"is_credit": False, "expires_at": "future"}, "expires_at"),
        ({"is_credit": False, "category": "paid"}, "category"),
        ({"is_credit": True, "category": "free"}, "category"),
        ({"is_credit": True, "expires_at": "past"}, "expires_at"),
        ({"is_credit": True, "expires_at": "naive"}, "expires_at"),
    ],
)
def test_bad_lot_fields_are_refused_naming_the_field(tx, customer_id: str, kw, field) -> None:
    credit(tx, customer_id, 100)
    moments = {
        "future": soon(60),
        "past": soon(-1),
        "naive": soon(60).replace(tzinfo=None),  # type: ignore[attr-defined]
    }
    if "expires_at" in kw:
        kw = {**kw, "expires_at": moments[kw["expires_at"]]}
    with tx() as s, pytest.raises(ValidationFailed) as raised:
        ledger.post(s, [ledger.Leg(customer_id, "USD", 10, **kw)])
    assert raised.value.field == field


def test_fingerprint_includes_category_and_expiry(tx, customer_id: str) -> None:
    key = ledger.client_key("lot-key")
    credit(tx, customer_id, 100, key=key, category="promotional")
    with pytest.raises(IdempotencyKeyReused):
        credit(tx, customer_id, 100, key=key)
    with pytest.raises(DuplicateEntry):
        credit(tx, customer_id, 100, key=key, category="promotional")


def test_expired_lot_is_not_spendable_and_expires_exactly_once(
    tx, settings: Settings, customer_id: str
) -> None:
    credit(tx, customer_id, 300)
    moment = soon(0.3)
    short = credit(tx, customer_id, 200, expires_at=moment, category="promotional")
    assert debit(tx, customer_id, 50).entry.amount == 50  # from the expiring lot, while live
    wait_until(moment)
    # Past its expiry the lot's 150 still counts in the balance, but no debit may spend it.
    with pytest.raises(InsufficientBalance) as refused:
        debit(tx, customer_id, 301)
    assert refused.value.balance == 300
    taken = debit(tx, customer_id, 400, on_short=ledger.OnShort.TAKE)
    assert taken.entry.amount == 300 and taken.shortfall == 100
    lot = lot_of(tx, short.entry.id)
    assert lot.remaining == 150
    run = expiry.expire_credits(settings)
    assert (run.expired_lots, run.expired_amount) == (1, 150)
    assert expiry.expire_credits(settings).expired_lots == 0
    with tx() as s:
        entries = s.scalars(select(LedgerEntry).where(LedgerEntry.event_type == "expiration")).all()
        assert [(e.amount, e.reference_object_id) for e in entries] == [(150, lot.id)]
        assert ledger.get_wallet(s, customer_id, "USD").balance == 0
        expired = s.get(CreditLot, lot.seq)
        assert (expired.remaining, expired.expired) == (0, 150)
    assert consumed(tx, entries[0].id) == [(lot.id, 150)]
    check(tx)


def test_top_up_reversal_takes_its_own_lot_first(tx, customer_id: str) -> None:
    soonest = credit(tx, customer_id, 100, expires_at=soon(86400))
    topup = credit(tx, customer_id, 500)
    own = lot_of(tx, topup.entry.id)
    reversal = debit(tx, customer_id, 550, event_type="payment_reversal", lot_id=own.id)
    assert consumed(tx, reversal.entry.id) == sorted(
        [(own.id, 500), (lot_of(tx, soonest.entry.id).id, 50)]
    )
    check(tx)


def test_a_batch_can_credit_and_spend_the_same_new_lot(tx, customer_id: str) -> None:
    legs = [
        ledger.Leg(customer_id, "USD", 100, is_credit=True),
        ledger.Leg(customer_id, "USD", 30, is_credit=False),
        ledger.Leg(customer_id, "USD", 20, is_credit=True, category="promotional"),
        ledger.Leg(customer_id, "USD", 50, is_credit=False),
    ]
    with tx() as s:
        results = ledger.post(s, legs)
    first = lot_of(tx, results[0].entry.id)
    promo = lot_of(tx, results[2].entry.id)
    assert (first.remaining, promo.remaining) == (40, 0)
    assert consumed(tx, results[3].entry.id) == sorted([(promo.id, 20), (first.id, 30)])
    check(tx)


def test_the_database_refuses_lots_that_grow_or_go_negative(tx, customer_id: str) -> None:
    posted = credit(tx, customer_id, 100)
    lot = lot_of(tx, posted.entry.id)
    for statement in (
        "UPDATE credit_lots SET remaining = remaining + 1",
        "UPDATE credit_lots SET remaining = -1",
        "UPDATE credit_lots SET expires_at = created_at",
        "DELETE FROM credit_lots",
    ):
        with pytest.raises((IntegrityError, DBAPIError)), tx() as s:
            s.execute(text(statement))
    with tx() as s:
        assert s.get(CreditLot, lot.seq).remaining == 100


def test_verify_catches_a_lot_that_drifts(tx, customer_id: str) -> None:
    credit(tx, customer_id, 100)
    check(tx)
    with tx() as s:  # lots may shrink (the trigger allows spending), here with no entry
        s.execute(text("UPDATE credit_lots SET remaining = remaining - 1"))
    with tx() as s:
        problems = ledger.verify(s).problems
    assert any("credit lots hold 99" in p for p in problems)


def test_verify_catches_a_debit_whose_lots_do_not_pay_for_it(tx, customer_id: str) -> None:
    credit(tx, customer_id, 100)
    spent = debit(tx, customer_id, 40)
    check(tx)
    with tx() as s:
        # Only with the append-only guard lifted can a consumption disappear.
        postgres = s.get_bind().dialect.name == "postgresql"
        if postgres:
            s.execute(text("ALTER TABLE lot_consumptions DISABLE TRIGGER USER"))
        else:
            s.execute(text("DROP TRIGGER lot_consumptions_no_delete"))
        s.execute(text("DELETE FROM lot_consumptions"))
        if postgres:
            s.execute(text("ALTER TABLE lot_consumptions ENABLE TRIGGER USER"))
    with tx() as s:
        problems = ledger.verify(s).problems
    assert any(spent.entry.id in p and "lots gave 0" in p for p in problems)


# -- expiry under concurrency ----------------------------------------------------------------


def _many_expired_lots(tx, customers: list[str], per_customer: int) -> int:
    moment = soon(0.5)
    with tx() as s:
        legs = [
            ledger.Leg(c, "USD", 10 + i, is_credit=True, expires_at=moment)
            for c in customers
            for i in range(per_customer)
        ]
        ledger.post(s, legs)
    wait_until(moment)
    return sum(10 + i for i in range(per_customer)) * len(customers)


def _customers(tx, n: int) -> list[str]:
    with tx() as s:
        return [
            ledger.create_customer(s, email=f"c{i}@example.com", name=f"C{i}")[0].customer_id
            for i in range(n)
        ]


def _expirations(tx) -> tuple[int, int, int]:
    with tx() as s:
        count, total = s.execute(
            select(func.count(), func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
                LedgerEntry.event_type == "expiration"
            )
        ).one()
        distinct = s.scalar(
            select(func.count(func.distinct(LedgerEntry.reference_object_id))).where(
                LedgerEntry.event_type == "expiration"
            )
        )
    return count, total, distinct


@pytest.mark.parametrize("backend", ["postgresql"])
def test_overlapping_runs_in_threads_expire_each_lot_once(tx, settings: Settings) -> None:
    customers = _customers(tx, 6)
    total = _many_expired_lots(tx, customers, 5)
    barrier = threading.Barrier(4)

    def run() -> int:
        barrier.wait()
        return expiry.expire_credits(settings, batch_size=7).expired_lots

    with ThreadPoolExecutor(4) as pool:
        expired = sum(pool.map(lambda _: run(), range(4)))
    assert expired == 30
    assert _expirations(tx) == (30, total, 30)
    check(tx)


@pytest.mark.parametrize("backend", ["postgresql"])
def test_racing_debits_and_expiry_processes_never_expire_what_was_spent(
    tx, settings: Settings, database_url: str
) -> None:
    customers = _customers(tx, 4)
    # Each customer: one never-expiring lot of 1,000 and expiring lots; debits race the expiry.
    with tx() as s:
        ledger.post(s, [ledger.Leg(c, "USD", 1_000, is_credit=True) for c in customers])
    total = _many_expired_lots(tx, customers, 4)
    stop = threading.Event()
    spent: list[int] = []

    def spend(customer: str) -> None:
        while not stop.is_set():
            posted = debit(tx, customer, 7, on_short=ledger.OnShort.TAKE)
            if posted is None:
                return
            spent.append(posted.entry.amount)

    with ThreadPoolExecutor(len(customers) + 3) as pool:
        debits = [pool.submit(spend, c) for c in customers]
        runs = [
            pool.submit(run_cli_process, database_url, "tasks", "run", "expire-credits", "--sync")
            for _ in range(3)
        ]
        results = [r.result() for r in runs]
        stop.set()
        for d in debits:
            d.result()
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    # The expired lots were past expiry before any debit ran: debits spent only the
    # never-expiring lots, and every expired lot expired whole, once.
    assert _expirations(tx) == (16, total, 16)
    assert sum(spent) <= 4_000
    with tx() as s:
        debited = s.scalar(
            select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
                LedgerEntry.event_type == "merchant_adjustment", ~LedgerEntry.is_credit
            )
        )
    assert debited == sum(spent)
    check(tx)


def test_a_debit_committed_before_the_expiry_leaves_only_the_rest_to_expire(
    tx, settings: Settings, customer_id: str
) -> None:
    moment = soon(0.3)
    posted = credit(tx, customer_id, 100, expires_at=moment)
    lot = lot_of(tx, posted.entry.id)
    # An expiration leg read before the debit (amount 100) posted after it takes only 60.
    debit(tx, customer_id, 40)
    wait_until(moment)
    leg = ledger.Leg(
        customer_id,
        "USD",
        100,
        is_credit=False,
        event_type="expiration",
        key=system_key("expire", lot.id),
        on_short=ledger.OnShort.TAKE,
        lot_id=lot.id,
    )
    with tx() as s:
        result = ledger.post(s, [leg])[0]
    assert result.entry.amount == 60 and result.shortfall == 40
    assert expiry.expire_credits(settings).expired_lots == 0
    check(tx)


# -- property: any sequence keeps the lots and the balance equal --------------------------------

_steps = st.lists(
    st.one_of(
        st.tuples(st.just("credit"), st.integers(1, 500), st.sampled_from([None, 0.05, 0.2, 60])),
        st.tuples(st.just("promo"), st.integers(1, 500), st.sampled_from([None, 0.05, 60])),
        st.tuples(st.just("debit"), st.integers(1, 700), st.just(None)),
        st.tuples(st.just("take"), st.integers(1, 700), st.just(None)),
        st.tuples(st.just("reverse"), st.integers(1, 300), st.just(None)),
        st.tuples(st.just("expire"), st.just(0), st.just(None)),
        st.tuples(st.just("pause"), st.just(0), st.just(None)),
    ),
    min_size=1,
    max_size=12,
)


@hsettings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=_steps)
def test_any_sequence_keeps_lots_equal_to_the_balance_and_spends_nothing_expired(
    tx, settings: Settings, steps
) -> None:
    with tx() as s:
        customer = ledger.create_customer(s, email=f"{uuid.uuid4().hex}@example.com", name="p")[
            0
        ].customer_id
    credits: list[str] = []
    for kind, amount, lifetime in steps:
        try:
            if kind in ("credit", "promo"):
                posted = credit(
                    tx,
                    customer,
                    amount,
                    category="promotional" if kind == "promo" else None,
                    expires_at=soon(lifetime) if lifetime else None,
                )
                credits.append(lot_of(tx, posted.entry.id).id)
            elif kind in ("debit", "take"):
                on_short = ledger.OnShort.TAKE if kind == "take" else ledger.OnShort.REFUSE
                debit(tx, customer, amount, on_short=on_short)
            elif kind == "reverse" and credits:
                debit(
                    tx,
                    customer,
                    amount,
                    event_type="payment_reversal",
                    lot_id=credits[-1],
                    on_short=ledger.OnShort.TAKE,
                )
            elif kind == "expire":
                expiry.expire_credits(settings)
            elif kind == "pause":
                time.sleep(0.06)
        except InsufficientBalance:
            pass
    with tx() as s:
        wallet = ledger.get_wallet(s, customer, "USD")
        remaining = s.scalar(
            select(func.coalesce(func.sum(CreditLot.remaining), 0)).where(
                CreditLot.customer_id == customer, CreditLot.currency == "USD"
            )
        )
        assert remaining == wallet.balance
        # No debit but a lot's own expiration took from it at or after its expiry.
        late = s.execute(
            select(LedgerEntry.id, LedgerEntry.event_type, LotConsumption.lot_id)
            .join(LotConsumption, LotConsumption.entry_id == LedgerEntry.id)
            .join(CreditLot, CreditLot.id == LotConsumption.lot_id)
            .where(
                LedgerEntry.customer_id == customer,
                CreditLot.expires_at.is_not(None),
                LedgerEntry.created_at >= CreditLot.expires_at,
                LedgerEntry.event_type != "expiration",
            )
        ).all()
        assert late == []
        report = ledger.verify(s)
        assert report.ok, report.problems


@pytest.mark.parametrize("backend", ["postgresql"])
def test_one_statement_debits_batches_credits_and_expiry_together_stay_exact(
    tx, settings: Settings
) -> None:
    """Both debit paths (the pipelined statement and the Python judge of a batch), expiring
    credits and expiry runs on the same wallets at once: no deadlock, no lost unit."""
    customers = _customers(tx, 3)
    with tx() as s:
        ledger.post(s, [ledger.Leg(c, "USD", 5_000, is_credit=True) for c in customers])
    stop = time.monotonic() + 3
    refused = []

    def one(i: int) -> None:
        rng = __import__("random").Random(i)
        while time.monotonic() < stop:
            c = rng.choice(customers)
            try:
                match i % 4:
                    case 0:
                        ledger.post_own(settings, ledger.Leg(c, "USD", rng.randint(1, 50), False))
                    case 1:
                        with tx() as s:
                            ledger.post(
                                s,
                                [
                                    ledger.Leg(c, "USD", rng.randint(1, 30), False),
                                    ledger.Leg(c, "USD", rng.randint(1, 30), False),
                                ],
                            )
                    case 2:
                        ledger.post_own(
                            settings,
                            ledger.Leg(
                                c,
                                "USD",
                                rng.randint(1, 80),
                                True,
                                expires_at=soon(rng.choice([0.05, 0.3, 60])),
                                category=rng.choice(["paid", "promotional"]),
                            ),
                        )
                    case 3:
                        expiry.expire_credits(settings)
            except InsufficientBalance:
                refused.append(i)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(8)))
    check(tx)
