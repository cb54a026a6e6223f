"""Holds on SQLite and PostgreSQL: what a hold reserves no debit can spend; capture, release
and expiry each end a hold once; the database refuses any other move and keeps the wallet's
held total; ``verify`` checks it; the depleted crossing is announced once."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from worker import ledger
from worker.config import Settings
from worker.errors import (
    HoldNotActive,
    HoldNotFound,
    IdempotencyKeyReused,
    InsufficientBalance,
    ValidationFailed,
)
from worker.infra.db import transaction
from worker.ledger import holds
from worker.models import LedgerEntry, OutboxMessage, Wallet, WalletHold, utcnow
from worker.notify import commit_hooks

WEBHOOK = {
    "notify_webhook_url": "http://127.0.0.1:9/hook",
    "notify_webhook_secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
}


@pytest.fixture
def hs(settings: Settings) -> Settings:
    """Every notification to one webhook URL (so the outbox shows what was announced)."""
    commit_hooks.install()
    return settings.with_overrides(**WEBHOOK)


@pytest.fixture
def cid(hs: Settings) -> str:
    with transaction(hs) as s:
        customer, _ = ledger.create_customer(s, email="holds@example.com", name="Holds")
        return customer.customer_id


def credit(settings: Settings, cid: str, amount: int, **kw) -> None:
    with transaction(settings) as s:
        ledger.post(s, [ledger.Leg(cid, "USD", amount, is_credit=True, **kw)])


def hold(settings: Settings, cid: str, amount: int, **kw) -> holds.HoldOutcome:
    kw.setdefault("actor", "test")
    with transaction(settings) as s:
        return holds.create_hold(s, customer_id=cid, currency="USD", amount=amount, **kw)


def wallet(settings: Settings, cid: str) -> Wallet:
    with transaction(settings) as s:
        return s.get(Wallet, (cid, "USD"))


def events(settings: Settings, event_type: str) -> list[dict]:
    with transaction(settings) as s:
        rows = s.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.event_type == event_type)
            .order_by(OutboxMessage.created_at)
        )
        return [m.payload["data"] for m in rows]


def check(settings: Settings) -> None:
    with transaction(settings) as s:
        report = ledger.verify(s)
    assert report.ok, report.problems


def test_a_hold_reserves_without_a_ledger_entry(hs: Settings, cid: str) -> None:
    credit(hs, cid, 1000)
    outcome = hold(hs, cid, 300, reason="llm call")
    assert outcome.hold.status == "active" and outcome.hold.amount == 300
    assert outcome.hold.hold_id.startswith("hold_")
    w = wallet(hs, cid)
    assert (w.balance, w.held) == (1000, 300)
    with transaction(hs) as s:
        assert s.query(LedgerEntry).count() == 1  # the credit only
    check(hs)


def test_a_hold_beyond_the_available_balance_is_refused_and_holds_nothing(
    hs: Settings, cid: str
) -> None:
    credit(hs, cid, 1000)
    hold(hs, cid, 700)
    with pytest.raises(InsufficientBalance) as refused:
        hold(hs, cid, 301)
    assert (refused.value.balance, refused.value.requested) == (300, 301)
    assert wallet(hs, cid).held == 700


@pytest.mark.parametrize("path", ["transaction", "alone"])
def test_a_debit_never_spends_held_money(hs: Settings, cid: str, path: str, backend: str) -> None:
    credit(hs, cid, 1000)
    hold(hs, cid, 600)
    leg = ledger.Leg(cid, "USD", 401, is_credit=False)
    with pytest.raises(InsufficientBalance) as refused:
        if path == "alone":
            ledger.post_own(hs, leg)  # the API's path: one statement on PostgreSQL
        else:
            with transaction(hs) as s:
                ledger.post(s, [leg])
    assert refused.value.balance == 400
    if path == "alone":
        assert ledger.post_own(hs, ledger.Leg(cid, "USD", 400, is_credit=False)).entry.amount == 400
    w = wallet(hs, cid)
    assert (w.balance, w.held) == ((600, 600) if path == "alone" else (1000, 600))
    check(hs)


def test_a_taking_debit_takes_only_what_is_available(hs: Settings, cid: str) -> None:
    credit(hs, cid, 1000)
    hold(hs, cid, 900)
    leg = ledger.Leg(cid, "USD", 500, is_credit=False, on_short=ledger.OnShort.TAKE)
    with transaction(hs) as s:
        posted = ledger.post(s, [leg])[0]
    assert (posted.entry.amount, posted.shortfall) == (100, 400)
    assert (wallet(hs, cid).balance, wallet(hs, cid).held) == (900, 900)


def test_capture_debits_the_captured_amount_and_releases_the_rest(hs: Settings, cid: str) -> None:
    credit(hs, cid, 1000)
    h = hold(hs, cid, 500).hold
    with transaction(hs) as s:
        outcome = holds.capture_hold(s, customer_id=cid, hold_id=h.hold_id, amount=120, actor="t")
    assert (outcome.hold.status, outcome.hold.captured_amount) == ("captured", 120)
    assert outcome.posted.entry.amount == 120 and outcome.posted.entry.event_type == "usage"
    assert outcome.hold.entry_id == outcome.posted.entry.id
    w = wallet(hs, cid)
    assert (w.balance, w.held) == (880, 0)
    check(hs)


def test_capture_of_the_whole_hold_can_spend_every_unit_it_held(hs: Settings, cid: str) -> None:
    credit(hs, cid, 500)
    h = hold(hs, cid, 500).hold
    with transaction(hs) as s:
        outcome = holds.capture_hold(s, customer_id=cid, hold_id=h.hold_id, actor="t")
    assert outcome.hold.captured_amount == 500 and outcome.shortfall == 0
    assert (wallet(hs, cid).balance, wallet(hs, cid).held) == (0, 0)


def test_capture_repeated_answers_the_same_hold_and_debits_once(hs: Settings, cid: str) -> None:
    credit(hs, cid, 1000)
    h = hold(hs, cid, 500).hold
    for _ in range(3):
        with transaction(hs) as s:
            outcome = holds.capture_hold(
                s, customer_id=cid, hold_id=h.hold_id, amount=200, actor="t"
            )
    assert outcome.replayed and outcome.hold.captured_amount == 200
    with pytest.raises(HoldNotActive), transaction(hs) as s:
        holds.capture_hold(s, customer_id=cid, hold_id=h.hold_id, amount=300, actor="t")
    with pytest.raises(HoldNotActive) as refused, transaction(hs) as s:
        holds.release_hold(s, customer_id=cid, hold_id=h.hold_id, actor="t")
    assert refused.value.status == "captured"
    assert wallet(hs, cid).balance == 800
    check(hs)


def test_capture_above_the_hold_names_amount(hs: Settings, cid: str) -> None:
    credit(hs, cid, 1000)
    h = hold(hs, cid, 100).hold
    with pytest.raises(ValidationFailed) as refused, transaction(hs) as s:
        holds.capture_hold(s, customer_id=cid, hold_id=h.hold_id, amount=101, actor="t")
    assert refused.value.field == "amount"
    assert wallet(hs, cid).held == 100


def test_release_frees_it_all_and_a_released_hold_cannot_be_captured(
    hs: Settings, cid: str
) -> None:
    credit(hs, cid, 1000)
    h = hold(hs, cid, 400).hold
    for _ in range(2):
        with transaction(hs) as s:
            outcome = holds.release_hold(s, customer_id=cid, hold_id=h.hold_id, actor="t")
    assert outcome.hold.status == "released" and outcome.replayed
    with pytest.raises(HoldNotActive) as refused, transaction(hs) as s:
        holds.capture_hold(s, customer_id=cid, hold_id=h.hold_id, actor="t")
    assert refused.value.status == "released"
    assert (wallet(hs, cid).balance, wallet(hs, cid).held) == (1000, 0)


def test_a_hold_past_its_expiry_cannot_be_captured_before_the_task_runs(
    hs: Settings, cid: str
) -> None:
    credit(hs, cid, 1000)
    h = hold(hs, cid, 400, expires_in_seconds=60).hold
    later = utcnow() + timedelta(seconds=61)
    with pytest.raises(HoldNotActive) as refused, transaction(hs) as s:
        holds.capture_hold(s, customer_id=cid, hold_id=h.hold_id, actor="t", now=later)
    assert refused.value.status == "expired"
    with transaction(hs) as s:
        assert holds.expire_holds(s, now=later) == (1, 1)
    with transaction(hs) as s:
        assert holds.expire_holds(s, now=later) == (0, 0)
        assert holds.get_hold(s, cid, h.hold_id).status == "expired"
    assert wallet(hs, cid).held == 0
    [notice] = events(hs, "wallet.hold_expired")
    assert (notice["hold_id"], notice["amount"], notice["status"]) == (h.hold_id, 400, "expired")
    check(hs)


def test_a_new_hold_first_expires_the_wallets_overdue_holds(hs: Settings, cid: str) -> None:
    credit(hs, cid, 1000)
    h = hold(hs, cid, 1000, expires_in_seconds=1).hold
    # Past its expiry, the task not run: the next hold of the wallet expires it first.
    while utcnow() <= h.expires_at:
        time.sleep(0.05)
    assert hold(hs, cid, 1000).hold.status == "active"
    assert wallet(hs, cid).held == 1000
    assert len(events(hs, "wallet.hold_expired")) == 1


def test_the_same_key_answers_the_same_hold_and_other_parameters_are_refused(
    hs: Settings, cid: str
) -> None:
    credit(hs, cid, 1000)
    first = hold(hs, cid, 300, idempotency_key="call-1").hold
    again = hold(hs, cid, 300, idempotency_key="call-1")
    assert again.replayed and again.hold.hold_id == first.hold_id
    with pytest.raises(IdempotencyKeyReused) as refused:
        hold(hs, cid, 301, idempotency_key="call-1")
    assert refused.value.fields == ["amount"]
    assert wallet(hs, cid).held == 300


def test_an_unknown_hold_is_not_found_and_another_customers_neither(hs: Settings, cid: str) -> None:
    credit(hs, cid, 1000)
    h = hold(hs, cid, 300).hold
    with transaction(hs) as s:
        other, _ = ledger.create_customer(s, email="other@example.com", name="Other")
    with pytest.raises(HoldNotFound), transaction(hs) as s:
        holds.capture_hold(s, customer_id=other.customer_id, hold_id=h.hold_id, actor="t")
    with pytest.raises(HoldNotFound), transaction(hs) as s:
        holds.get_hold(s, cid, "hold_nope")


def test_the_database_refuses_a_hold_moving_back_or_twice(hs: Settings, cid: str) -> None:
    credit(hs, cid, 1000)
    h = hold(hs, cid, 300).hold
    with transaction(hs) as s:
        holds.release_hold(s, customer_id=cid, hold_id=h.hold_id, actor="t")
    for values in ({"status": "active"}, {"status": "captured", "captured_amount": 1}):
        with pytest.raises((IntegrityError, DBAPIError)), transaction(hs) as s:
            s.execute(
                WalletHold.__table__.update()
                .where(WalletHold.hold_id == h.hold_id)
                .values(**values)
            )
    with pytest.raises((IntegrityError, DBAPIError)), transaction(hs) as s:
        s.execute(WalletHold.__table__.delete().where(WalletHold.hold_id == h.hold_id))
    check(hs)


def test_the_database_refuses_a_capture_above_the_hold(hs: Settings, cid: str) -> None:
    credit(hs, cid, 1000)
    h = hold(hs, cid, 300).hold
    with pytest.raises((IntegrityError, DBAPIError)), transaction(hs) as s:
        s.execute(
            WalletHold.__table__.update()
            .where(WalletHold.hold_id == h.hold_id)
            .values(status="captured", captured_amount=301)
        )


def test_verify_reports_a_held_total_that_drifts(hs: Settings, cid: str, backend: str) -> None:
    credit(hs, cid, 1000)
    hold(hs, cid, 300)
    if backend != "sqlite":  # PostgreSQL, directly or through PgBouncer
        # Only the holds' trigger may change it.
        with pytest.raises(DBAPIError), transaction(hs) as s:
            s.execute(text("UPDATE wallets SET held = 0"))
        return
    with transaction(hs) as s:
        s.execute(text("UPDATE wallets SET held = 0"))
    with transaction(hs) as s:
        report = ledger.verify(s)
    assert any("held 0 but its active holds sum to 300" in p for p in report.problems)


def test_depleted_is_announced_once_when_holds_take_the_available_balance_to_zero(
    hs: Settings, cid: str
) -> None:
    credit(hs, cid, 1000)
    h = hold(hs, cid, 1000).hold
    with transaction(hs) as s:
        holds.release_hold(s, customer_id=cid, hold_id=h.hold_id, actor="t")
    hold(hs, cid, 1000)
    [first, second] = events(hs, "wallet.depleted")
    assert (first["balance"], first["held_balance"], first["available_balance"]) == (1000, 1000, 0)
    assert second["held_balance"] == 1000
    # A debit to 0 without holds is a crossing too, once.
    with transaction(hs) as s:
        other, _ = ledger.create_customer(s, email="d@example.com", name="D")
    credit(hs, other.customer_id, 50)
    for _ in range(2):
        with transaction(hs) as s:
            ledger.post(
                s,
                [
                    ledger.Leg(
                        other.customer_id,
                        "USD",
                        50,
                        is_credit=False,
                        on_short=ledger.OnShort.TAKE,
                    )
                ],
            )
    assert len(events(hs, "wallet.depleted")) == 3


def test_a_new_wallet_is_not_announced_as_depleted(hs: Settings, cid: str) -> None:
    with transaction(hs) as s:
        ledger.get_wallets(s, cid)
    credit(hs, cid, 10)
    assert events(hs, "wallet.depleted") == []
    assert wallet(hs, cid).depleted is False


def test_credit_expiring_under_a_hold_leaves_the_capture_what_the_live_lots_hold(
    hs: Settings, cid: str
) -> None:
    from tests.support.lots import expire, expiring_lot, wait_until_past

    credit(hs, cid, 100)
    lot_id, moment = expiring_lot(lambda: transaction(hs), cid, 400)
    h = hold(hs, cid, 450).hold
    wait_until_past(moment)
    expire(lambda: transaction(hs), cid, lot_id)
    w = wallet(hs, cid)
    assert (w.balance, w.held) == (100, 450)  # held above the balance: nothing available
    with transaction(hs) as s:
        outcome = holds.capture_hold(s, customer_id=cid, hold_id=h.hold_id, actor="t")
    assert (outcome.hold.captured_amount, outcome.shortfall) == (100, 350)
    assert (wallet(hs, cid).balance, wallet(hs, cid).held) == (0, 0)
    check(hs)


def test_release_expired_holds_runs_through_tasks_run(hs: Settings, cid: str, cli) -> None:
    credit(hs, cid, 1000)
    h = hold(hs, cid, 100, expires_in_seconds=1).hold
    while utcnow() <= h.expires_at:
        time.sleep(0.05)
    ran = cli("tasks", "run", "release-expired-holds", "--sync")
    assert ran.code == 0, ran.err
    assert '"expired": 1' in ran.out
    assert wallet(hs, cid).held == 0


@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["hold", "capture", "release", "debit", "credit"]), st.integers(1, 400)
        ),
        max_size=25,
    )
)
@hsettings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_any_sequence_keeps_held_equal_to_active_holds_and_never_overspends(
    hs: Settings, cid: str, ops: list[tuple[str, int]]
) -> None:
    with transaction(hs) as s:
        before = s.get(Wallet, (cid, "USD"))
        start_balance, start_held = before.balance, before.held
    active: list[str] = []
    for op, n in ops:
        try:
            with transaction(hs) as s:
                if op == "credit":
                    ledger.post(s, [ledger.Leg(cid, "USD", n, is_credit=True)])
                elif op == "debit":
                    ledger.post(s, [ledger.Leg(cid, "USD", n, is_credit=False)])
                elif op == "hold":
                    active.append(
                        holds.create_hold(
                            s, customer_id=cid, currency="USD", amount=n, actor="p"
                        ).hold.hold_id
                    )
                elif active:
                    hold_id = active.pop(n % len(active))
                    if op == "capture":
                        holds.capture_hold(
                            s, customer_id=cid, hold_id=hold_id, actor="p", amount=None
                        )
                    else:
                        holds.release_hold(s, customer_id=cid, hold_id=hold_id, actor="p")
        except InsufficientBalance:
            pass
        with transaction(hs) as s:
            w = s.get(Wallet, (cid, "USD"))
            assert w.held == holds.held_total(s, cid, "USD")
            assert w.balance >= w.held  # no credit expires here: held stays covered
    check(hs)
    assert start_balance >= 0 and start_held >= 0


def test_a_charge_takes_only_the_available_balance(hs: Settings, cid: str) -> None:
    from worker.charges import checkout

    credit(hs, cid, 1000)
    hold(hs, cid, 700)
    with transaction(hs) as s:
        view = checkout.charge(s, cid, 500, "USD", "order-1")
        assert view.charge.applied_amount == 300
    with pytest.raises(InsufficientBalance), transaction(hs) as s:
        checkout.charge(s, cid, 1, "USD", "order-2", allow_partial=False)
    assert (wallet(hs, cid).balance, wallet(hs, cid).held) == (700, 700)
    check(hs)
