"""Low-balance crossing semantics: one notification per crossing, state in the database."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import event, select

from worker import ledger
from worker.config import Settings
from worker.infra.db import get_engine, transaction
from worker.models import OutboxMessage, Wallet
from worker.notify import commit_hooks, lowbalance

WEBHOOK = {
    "notify_webhook_url": "http://127.0.0.1:9/hook",
    "notify_webhook_secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
}


@pytest.fixture
def lb_settings(settings: Settings) -> Settings:
    """USD threshold 1000, every event type to one webhook URL."""
    return settings.with_overrides(low_balance_thresholds="USD=1000", **WEBHOOK)


@pytest.fixture(autouse=True)
def _hooks() -> None:
    commit_hooks.install()  # as the web app, the worker and the CLI do


def _customer(s: Settings, email: str = "a@example.com") -> str:
    with transaction(s) as session:
        customer, _ = ledger.create_customer(session, email=email, name="A")
        return customer.customer_id


def _move(s: Settings, cid: str, amount: int, credit: bool) -> None:
    """Post one entry (checked before commit where the hooks are installed), then check it
    again as an operator or the scan would: a no-op when the first check ran."""
    with transaction(s) as session:
        ledger.post_entry(session, customer_id=cid, currency="USD", amount=amount, is_credit=credit)
    lowbalance.check_wallet(s, cid, "USD")


def _unchecked(s: Settings, cid: str, *moves: tuple[int, bool]) -> None:
    """Entries whose check never ran (posted by a process without the commit hooks, say):
    what the scan is the safety net for."""
    with transaction(s) as session:
        for amount, credit in moves:
            ledger.post_entry(
                session, customer_id=cid, currency="USD", amount=amount, is_credit=credit
            )
        session.info.pop(commit_hooks.CHANGED_KEY, None)


def _events(s: Settings, *types: str) -> list[OutboxMessage]:
    with transaction(s) as session:
        query = select(OutboxMessage).order_by(OutboxMessage.created_at, OutboxMessage.id)
        rows = list(session.scalars(query))
    wanted = types or ("wallet.balance_low", "wallet.balance_recovered")
    return [m for m in rows if m.event_type in wanted]


def _state(s: Settings, cid: str) -> str:
    with transaction(s) as session:
        return session.get(Wallet, (cid, "USD")).low_state


def test_many_debits_below_threshold_notify_once(lb_settings: Settings) -> None:
    cid = _customer(lb_settings)
    _move(lb_settings, cid, 5000, True)
    for _ in range(7):  # 4300 ... 1500, 800 (crossing), 100
        _move(lb_settings, cid, 700, False)
    lows = _events(lb_settings)
    assert [m.event_type for m in lows] == ["wallet.balance_low"]
    data = lows[0].payload["data"]
    assert (data["customer_id"], data["currency"], data["balance"], data["threshold"]) == (
        cid,
        "USD",
        800,
        1000,
    )
    assert lows[0].payload["type"] == "wallet.balance_low"
    assert set(lows[0].payload) == {"business_id", "type", "timestamp", "data"}
    with transaction(lb_settings) as session:
        crossing = ledger.list_entries(session, cid, page_size=100)[1]
    assert data["ledger_entry_id"] == crossing.id  # the 6th debit took it from 1500 to 800
    assert crossing.after_balance == 800
    assert _state(lb_settings, cid) == "low"


def test_credit_above_threshold_recovers_once(lb_settings: Settings) -> None:
    cid = _customer(lb_settings)
    _move(lb_settings, cid, 1500, True)
    _move(lb_settings, cid, 1000, False)
    _move(lb_settings, cid, 700, True)  # 1200: recovered
    _move(lb_settings, cid, 100, True)  # 1300: still normal, nothing
    assert [m.event_type for m in _events(lb_settings)] == [
        "wallet.balance_low",
        "wallet.balance_recovered",
    ]
    assert _events(lb_settings)[1].payload["data"]["balance"] == 1200


def test_flapping_around_threshold_notifies_each_crossing(lb_settings: Settings) -> None:
    cid = _customer(lb_settings)
    _move(lb_settings, cid, 1000, True)  # exactly the threshold: armed, not low
    for _ in range(3):
        _move(lb_settings, cid, 1, False)  # 999: low
        _move(lb_settings, cid, 1, True)  # 1000: recovered (at threshold counts as normal)
    kinds = [m.event_type for m in _events(lb_settings)]
    assert kinds == ["wallet.balance_low", "wallet.balance_recovered"] * 3


def test_new_wallet_is_unarmed_until_it_reaches_threshold(lb_settings: Settings) -> None:
    cid = _customer(lb_settings)
    _move(lb_settings, cid, 500, True)
    _move(lb_settings, cid, 200, False)
    assert _events(lb_settings) == []
    assert _state(lb_settings, cid) == "unarmed"
    _move(lb_settings, cid, 700, True)  # 1000: arms silently
    assert _state(lb_settings, cid) == "normal"
    assert _events(lb_settings) == []
    _move(lb_settings, cid, 1, False)
    assert [m.event_type for m in _events(lb_settings)] == ["wallet.balance_low"]


def test_customer_override_wins_over_configured_threshold(lb_settings: Settings) -> None:
    cid = _customer(lb_settings)
    other = _customer(lb_settings, "b@example.com")
    with transaction(lb_settings) as session:
        ledger.update_customer(session, cid, low_balance_thresholds={"USD": 300})
    for c in (cid, other):
        _move(lb_settings, c, 2000, True)
        _move(lb_settings, c, 1500, False)  # 500: low for `other` (1000), not for cid (300)
    lows = _events(lb_settings)
    assert [m.payload["data"]["customer_id"] for m in lows] == [other]
    _move(lb_settings, cid, 300, False)  # 200 < 300
    lows = _events(lb_settings)
    assert [(m.payload["data"]["customer_id"], m.payload["data"]["threshold"]) for m in lows] == [
        (other, 1000),
        (cid, 300),
    ]


def test_crossing_commits_with_the_entry_that_caused_it(lb_settings: Settings) -> None:
    cid = _customer(lb_settings)
    with transaction(lb_settings) as session:
        ledger.post_entry(session, customer_id=cid, currency="USD", amount=5000, is_credit=True)
    assert _state(lb_settings, cid) == "normal"  # armed silently
    with transaction(lb_settings) as session:
        entry = ledger.post_entry(
            session, customer_id=cid, currency="USD", amount=4500, is_credit=False
        ).entry
    assert _state(lb_settings, cid) == "low"
    [low] = _events(lb_settings)
    assert low.payload["data"]["ledger_entry_id"] == entry.id


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_an_entry_that_crosses_nothing_costs_no_extra_statement(settings: Settings) -> None:
    lb_settings = settings.with_overrides(low_balance_thresholds="USD=1000")  # no subscriber
    cid = _customer(lb_settings)
    _move(lb_settings, cid, 5000, True)
    statements: list[str] = []

    def record(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    engine = get_engine(lb_settings)
    event.listen(engine, "before_cursor_execute", record)
    try:
        with transaction(lb_settings) as session:
            ledger.post_entry(session, customer_id=cid, currency="USD", amount=100, is_credit=False)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    # The debit's statement (after the wallet's lock) returned the wallet's state and the
    # customer's overrides: 4900 is above 1000 and the wallet is normal, so no read and no
    # UPDATE of low_state follow it.
    assert len(statements) == 2 and "FOR UPDATE" in statements[0], statements


def test_scan_finds_lost_check_and_never_double_notifies(lb_settings: Settings) -> None:
    cid = _customer(lb_settings)
    _move(lb_settings, cid, 5000, True)
    _unchecked(lb_settings, cid, (4500, False))  # the immediate check is lost
    first = lowbalance.scan(lb_settings)
    assert first.as_dict()["balance_low"] == 1
    again = lowbalance.scan(lb_settings)
    lowbalance.check_wallet(lb_settings, cid, "USD")  # the late immediate check: a no-op
    assert again.as_dict()["balance_low"] == 0
    assert len(_events(lb_settings)) == 1


def test_scan_arms_by_history_when_the_arming_check_was_lost(lb_settings: Settings) -> None:
    cid = _customer(lb_settings)
    _unchecked(lb_settings, cid, (2000, True), (1900, False))  # to 2000, then 100
    result = lowbalance.scan(lb_settings)
    assert result.as_dict()["balance_low"] == 1
    assert _state(lb_settings, cid) == "low"


def test_scan_sends_recovery_missed_by_the_immediate_check(lb_settings: Settings) -> None:
    cid = _customer(lb_settings)
    _move(lb_settings, cid, 2000, True)
    _move(lb_settings, cid, 1500, False)
    _unchecked(lb_settings, cid, (900, True))
    assert lowbalance.scan(lb_settings).as_dict()["balance_recovered"] == 1
    assert lowbalance.scan(lb_settings).as_dict()["balance_recovered"] == 0


def test_scan_applies_overrides_above_the_configured_threshold(lb_settings: Settings) -> None:
    cid = _customer(lb_settings)
    with transaction(lb_settings) as session:
        ledger.update_customer(session, cid, low_balance_thresholds={"USD": 5000})
        ledger.post_entry(session, customer_id=cid, currency="USD", amount=6000, is_credit=True)
    lowbalance.check_wallet(lb_settings, cid, "USD")
    _unchecked(lb_settings, cid, (3000, False))  # 3000: above 1000, below the override
    assert lowbalance.scan(lb_settings).as_dict()["balance_low"] == 1


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_eight_concurrent_debits_crossing_at_once_notify_once(lb_settings: Settings) -> None:
    cid = _customer(lb_settings)
    _move(lb_settings, cid, 1400, True)
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def debit_then_check() -> None:
        try:
            barrier.wait(10)
            _move(lb_settings, cid, 100, False)  # 1400 -> 600 in 8 steps; crossing on the 5th
            barrier.wait(10)
            lowbalance.check_wallet(lb_settings, cid, "USD")  # all 8 re-check at once
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=debit_then_check) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    lows = _events(lb_settings)
    assert [m.event_type for m in lows] == ["wallet.balance_low"]
    assert _state(lb_settings, cid) == "low"
    with transaction(lb_settings) as session:
        assert ledger.get_wallet(session, cid, "USD").balance == 600


def test_ledger_entry_events_only_when_subscribed(settings: Settings) -> None:
    quiet = settings.with_overrides(low_balance_thresholds="USD=1000")
    cid = _customer(quiet)
    _move(quiet, cid, 100, True)
    assert _events(quiet, "wallet.ledger_entry.created") == []
    loud = quiet.with_overrides(**WEBHOOK)
    _move(loud, cid, 50, False)
    created = _events(loud, "wallet.ledger_entry.created")
    assert len(created) == 1
    data = created[0].payload["data"]
    assert (data["customer_id"], data["amount"], data["is_credit"], data["after_balance"]) == (
        cid,
        50,
        False,
        50,
    )
