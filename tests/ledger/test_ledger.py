"""The ledger core on SQLite and PostgreSQL: every function and every typed error."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from worker import ledger
from worker.config import Settings
from worker.errors import (
    CustomerNotFound,
    DuplicateEntry,
    IdempotencyKeyReused,
    InsufficientBalance,
    InvalidAmount,
    UnsupportedCurrency,
    ValidationFailed,
)
from worker.infra.db import get_engine, transaction
from worker.models import LedgerEntry, Wallet
from worker.money import MAX_AMOUNT
from worker.notify import commit_hooks


@pytest.fixture
def customer_id(tx) -> str:
    """A fresh customer with empty USD and INR wallets."""
    with tx() as s:
        customer, _ = ledger.create_customer(s, email="ada@example.com", name="Ada")
        return customer.customer_id


def credit(tx, customer_id: str, amount: int, currency: str = "USD", **kw) -> ledger.Posted:
    with tx() as s:
        return ledger.post_entry(
            s, customer_id=customer_id, currency=currency, amount=amount, is_credit=True, **kw
        )


def debit(tx, customer_id: str, amount: int, currency: str = "USD", **kw) -> ledger.Posted:
    with tx() as s:
        return ledger.post_entry(
            s, customer_id=customer_id, currency=currency, amount=amount, is_credit=False, **kw
        )


def balance(tx, customer_id: str, currency: str = "USD") -> int:
    with tx() as s:
        return ledger.get_wallet(s, customer_id, currency).balance


def entry_count(tx) -> int:
    with tx() as s:
        return s.scalar(select(func.count()).select_from(LedgerEntry))


# -- customers -----------------------------------------------------------------------------


def test_create_customer_creates_one_zero_wallet_per_currency(tx) -> None:
    with tx() as s:
        customer, created = ledger.create_customer(
            s, email="Bob@Example.com", name="Bob", phone_number="+1555", metadata={"tier": 1}
        )
    assert created
    assert customer.customer_id.startswith("cus_")
    assert customer.business_id == "bus_local"
    assert (customer.email, customer.metadata_) == ("Bob@Example.com", {"tier": 1})
    with tx() as s:
        wallets = ledger.get_wallets(s, customer.customer_id)
    assert [(w.currency, w.balance) for w in wallets] == [("USD", 0), ("INR", 0)]


@pytest.mark.parametrize("again", ["ada@example.com", "ADA@example.COM", "  Ada@Example.com "])
def test_create_customer_with_existing_email_returns_the_existing_one(
    tx, customer_id: str, again: str
) -> None:
    with tx() as s:
        customer, created = ledger.create_customer(s, email=again, name="Someone else")
    assert not created
    assert customer.customer_id == customer_id
    assert customer.name == "Ada"
    with tx() as s:
        assert len(ledger.list_customers(s)) == 1


def test_get_customer_unknown_raises_customer_not_found(tx) -> None:
    with tx() as s, pytest.raises(CustomerNotFound) as err:
        ledger.get_customer(s, "cus_missing")
    assert err.value.customer_id == "cus_missing"


def test_find_customer_by_email_is_case_insensitive(tx, customer_id: str) -> None:
    with tx() as s:
        assert ledger.find_customer_by_email(s, "ADA@EXAMPLE.COM").customer_id == customer_id
        assert ledger.find_customer_by_email(s, "nobody@example.com") is None


def test_list_customers_pages_and_filters_by_email(tx) -> None:
    with tx() as s:
        ids = [ledger.create_customer(s, email=f"c{i}@x.io", name=str(i))[0] for i in range(3)]
    with tx() as s:
        page = ledger.list_customers(s, page_size=2)
        rest = ledger.list_customers(s, page_size=2, page_number=1)
        only = ledger.list_customers(s, email="C1@X.IO")
    assert len(page) == 2 and len(rest) == 1
    assert {c.customer_id for c in page + rest} == {c.customer_id for c in ids}
    assert [c.customer_id for c in only] == [ids[1].customer_id]


def test_update_customer_changes_allowed_fields_only(tx, customer_id: str) -> None:
    with tx() as s:
        ledger.update_customer(s, customer_id, name="Ada L.", metadata={"a": 1})
    with tx() as s:
        customer = ledger.get_customer(s, customer_id)
        assert (customer.name, customer.metadata_) == ("Ada L.", {"a": 1})
        with pytest.raises(ValidationFailed) as err:
            ledger.update_customer(s, customer_id, email="x@y.z")
    assert err.value.field == "email"


# -- wallets -------------------------------------------------------------------------------


def test_get_wallets_of_unknown_customer_raises(tx) -> None:
    with tx() as s, pytest.raises(CustomerNotFound):
        ledger.get_wallets(s, "cus_missing")


def test_get_wallet_rejects_unconfigured_currency(tx, customer_id: str) -> None:
    with tx() as s, pytest.raises(UnsupportedCurrency) as err:
        ledger.get_wallet(s, customer_id, "XXX")
    assert err.value.field == "currency"


def test_wallet_for_newly_configured_currency_appears_lazily_with_zero(
    settings: Settings, customer_id: str
) -> None:
    wider = settings.with_overrides(wallet_currencies=("USD", "INR", "EUR"))
    with transaction(wider) as s:
        assert s.get(Wallet, (customer_id, "EUR")) is None
        wallets = ledger.get_wallets(s, customer_id)
    assert [(w.currency, w.balance) for w in wallets] == [("USD", 0), ("INR", 0), ("EUR", 0)]


def test_credit_in_newly_configured_currency_creates_its_wallet(
    settings: Settings, customer_id: str
) -> None:
    wider = settings.with_overrides(wallet_currencies=("USD", "INR", "EUR"))
    with transaction(wider) as s:
        posted = ledger.post_entry(
            s, customer_id=customer_id, currency="EUR", amount=700, is_credit=True
        )
    assert (posted.wallet.currency, posted.wallet.balance) == ("EUR", 700)
    with transaction(wider) as s:
        assert ledger.verify(s).ok


def test_debit_in_newly_configured_currency_is_refused_against_zero(
    settings: Settings, customer_id: str
) -> None:
    wider = settings.with_overrides(wallet_currencies=("USD", "INR", "EUR"))
    with transaction(wider) as s, pytest.raises(InsufficientBalance) as err:
        ledger.post_entry(s, customer_id=customer_id, currency="EUR", amount=1, is_credit=False)
    assert err.value.balance == 0


def test_total_balance_usd_converts_and_rounds_down_once(
    settings: Settings, customer_id: str
) -> None:
    rates = {"USD": Decimal(1), "INR": Decimal("0.012"), "EUR": Decimal("1.085")}
    wider = settings.with_overrides(wallet_currencies=("USD", "INR", "EUR"), fx_rates_to_usd=rates)
    with transaction(wider) as s:
        for currency, amount in (("USD", 100), ("INR", 50), ("EUR", 10)):
            ledger.post_entry(
                s, customer_id=customer_id, currency=currency, amount=amount, is_credit=True
            )
    with transaction(wider) as s:
        total = ledger.total_balance_usd(s, ledger.get_wallets(s, customer_id))
    # 100 + 0.6 + 10.85 = 111.45 -> 111 (rounding each wallet first would give 110).
    assert total == 111


def test_total_balance_usd_of_empty_wallets_is_zero(tx, customer_id: str) -> None:
    with tx() as s:
        assert ledger.total_balance_usd(s, ledger.get_wallets(s, customer_id)) == 0


# -- entries -------------------------------------------------------------------------------


def test_credit_then_debit_moves_balance_and_records_the_chain(tx, customer_id: str) -> None:
    first = credit(tx, customer_id, 1000, reason="top-up", event_type="payment")
    second = debit(tx, customer_id, 300, event_type="usage", reference_object_id="evt_1")
    assert first.wallet.balance == 1000
    assert (first.entry.before_balance, first.entry.after_balance) == (0, 1000)
    assert first.entry.id.startswith("wle_")
    assert (first.entry.reason, first.entry.event_type, first.entry.is_credit) == (
        "top-up",
        "payment",
        True,
    )
    assert second.wallet.balance == 700
    assert (second.entry.before_balance, second.entry.after_balance) == (1000, 700)
    assert second.entry.reference_object_id == "evt_1"
    assert balance(tx, customer_id) == 700
    assert balance(tx, customer_id, "INR") == 0


def test_currency_is_case_insensitive(tx, customer_id: str) -> None:
    assert credit(tx, customer_id, 5, currency="inr").wallet.currency == "INR"


def test_debit_beyond_balance_raises_insufficient_balance_and_writes_nothing(
    tx, customer_id: str
) -> None:
    credit(tx, customer_id, 100)
    with pytest.raises(InsufficientBalance) as err:
        debit(tx, customer_id, 101)
    assert str(err.value).startswith("Insufficient balance")
    assert (err.value.balance, err.value.requested, err.value.currency) == (100, 101, "USD")
    assert balance(tx, customer_id) == 100
    assert entry_count(tx) == 1


def test_debit_of_exact_balance_empties_wallet(tx, customer_id: str) -> None:
    credit(tx, customer_id, 100)
    assert debit(tx, customer_id, 100).wallet.balance == 0


def test_post_entry_for_unknown_customer_raises_customer_not_found(tx) -> None:
    with pytest.raises(CustomerNotFound):
        credit(tx, "cus_missing", 1)
    with pytest.raises(CustomerNotFound):
        debit(tx, "cus_missing", 1, idempotency_key="k")


def test_post_entry_rejects_unsupported_currency(tx, customer_id: str) -> None:
    with pytest.raises(UnsupportedCurrency):
        credit(tx, customer_id, 1, currency="XXX")
    with pytest.raises(UnsupportedCurrency):
        credit(tx, customer_id, 1, currency=None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "amount", [0, -1, 1.0, 1.5, True, False, "10", None, Decimal(1), MAX_AMOUNT + 1, 2**64]
)
def test_post_entry_rejects_invalid_amounts(tx, customer_id: str, amount: object) -> None:
    with pytest.raises(InvalidAmount) as err:
        credit(tx, customer_id, amount)  # type: ignore[arg-type]
    assert err.value.field == "amount"
    assert entry_count(tx) == 0


def test_max_amount_is_accepted_and_the_balance_cannot_exceed_it(tx, customer_id: str) -> None:
    assert credit(tx, customer_id, MAX_AMOUNT).wallet.balance == MAX_AMOUNT
    with pytest.raises(InvalidAmount):
        credit(tx, customer_id, 1)
    assert balance(tx, customer_id) == MAX_AMOUNT


def test_post_entry_rejects_unknown_event_type_and_empty_key(tx, customer_id: str) -> None:
    with pytest.raises(ValidationFailed) as err:
        credit(tx, customer_id, 1, event_type="gift")
    assert err.value.field == "event_type"
    with pytest.raises(ValidationFailed) as err:
        credit(tx, customer_id, 1, idempotency_key="")
    assert err.value.field == "idempotency_key"


def test_retry_with_same_key_and_parameters_raises_duplicate_carrying_original(
    tx, customer_id: str
) -> None:
    original = credit(tx, customer_id, 500, idempotency_key="pay_1", reason="top-up")
    with pytest.raises(DuplicateEntry) as err:
        credit(tx, customer_id, 500, idempotency_key="pay_1", reason="top-up")
    assert err.value.entry.id == original.entry.id
    assert err.value.entry.amount == 500
    assert balance(tx, customer_id) == 500
    assert entry_count(tx) == 1


def test_same_key_for_another_customer_is_independent(tx, customer_id: str) -> None:
    with tx() as s:
        other, _ = ledger.create_customer(s, email="other@example.com", name="O")
    credit(tx, customer_id, 5, idempotency_key="k")
    credit(tx, other.customer_id, 5, idempotency_key="k")
    assert balance(tx, other.customer_id) == 5


@pytest.mark.parametrize(
    ("changes", "fields"),
    [
        ({"amount": 501}, ["amount"]),
        ({"currency": "INR"}, ["currency"]),
        ({"is_credit": False}, ["entry_type"]),
        ({"reason": "other"}, ["reason"]),
        ({"event_type": "payment"}, ["event_type"]),
        ({"reference_object_id": "x", "amount": 1}, ["amount", "reference_object_id"]),
    ],
)
def test_same_key_with_different_parameters_names_the_differing_fields(
    tx, customer_id: str, changes: dict, fields: list[str]
) -> None:
    credit(tx, customer_id, 1000)
    base = {
        "customer_id": customer_id,
        "currency": "USD",
        "amount": 500,
        "is_credit": True,
        "reason": "r",
        "idempotency_key": "k1",
    }
    with tx() as s:
        original = ledger.post_entry(s, **base)
    with tx() as s, pytest.raises(IdempotencyKeyReused) as err:
        ledger.post_entry(s, **{**base, **changes})
    assert sorted(err.value.fields) == sorted(fields)
    assert err.value.original.id == original.entry.id
    assert "k1" in str(err.value)
    assert balance(tx, customer_id) == 1500


def test_failed_debit_does_not_consume_its_key(tx, customer_id: str) -> None:
    with pytest.raises(InsufficientBalance):
        debit(tx, customer_id, 300, idempotency_key="use_1")
    credit(tx, customer_id, 1000)
    assert debit(tx, customer_id, 300, idempotency_key="use_1").wallet.balance == 700
    with pytest.raises(DuplicateEntry):
        debit(tx, customer_id, 300, idempotency_key="use_1")
    assert balance(tx, customer_id) == 700


def test_failed_keyed_debit_keeps_callers_transaction_usable(tx, customer_id: str) -> None:
    kw = {"customer_id": customer_id, "currency": "USD"}
    with tx() as s:
        ledger.post_entry(s, amount=50, is_credit=True, **kw)
        with pytest.raises(InsufficientBalance):
            ledger.post_entry(s, amount=60, is_credit=False, idempotency_key="k", **kw)
        ledger.post_entry(s, amount=10, is_credit=False, idempotency_key="k2", **kw)
    assert balance(tx, customer_id) == 40
    with tx() as s:
        assert ledger.find_entry(s, customer_id, "k") is None
        assert ledger.verify(s).ok


def test_duplicate_inside_one_transaction_is_detected(tx, customer_id: str) -> None:
    with tx() as s:
        params = {"customer_id": customer_id, "currency": "USD", "amount": 7, "is_credit": True}
        first = ledger.post_entry(s, idempotency_key="once", **params)
        with pytest.raises(DuplicateEntry) as err:
            ledger.post_entry(s, idempotency_key="once", **params)
    assert err.value.entry.id == first.entry.id
    assert balance(tx, customer_id) == 7


def test_find_entry_by_key(tx, customer_id: str) -> None:
    posted = credit(tx, customer_id, 3, idempotency_key="k")
    with tx() as s:
        assert ledger.find_entry(s, customer_id, "k").id == posted.entry.id
        assert ledger.find_entry(s, customer_id, "other") is None


# -- post_alone: one autocommitted statement, or nothing -------------------------------------


def alone(settings: Settings, customer_id: str, amount: int, **kw) -> ledger.Posted | None:
    kw.setdefault("is_credit", True)
    kw.setdefault("currency", "USD")
    key = ledger.client_key(kw.pop("idempotency_key", None))
    return ledger.post_alone(settings, ledger.Leg(customer_id, amount=amount, key=key, **kw))


@pytest.mark.parametrize("backend", ["postgresql"])
def test_post_alone_commits_the_entry_and_the_balance_together(
    settings: Settings, tx, customer_id: str
) -> None:
    posted = alone(settings, customer_id, 700, reason="top-up", idempotency_key="a1")
    assert posted is not None
    assert (posted.wallet.balance, posted.entry.before_balance, posted.entry.after_balance) == (
        700,
        0,
        700,
    )
    # A debit: the wallet's lock, then the statement that reads its lots, in one round trip.
    debited = alone(settings, customer_id, 200, is_credit=False)
    assert debited is not None and debited.wallet.balance == 500
    # Committed (no transaction of ours around it), and exactly as post_entry would write it.
    assert balance(tx, customer_id) == 500
    with tx() as s:
        stored = ledger.find_entry(s, customer_id, "a1")
        assert stored is not None and stored.id == posted.entry.id
        assert stored.fingerprint == posted.entry.fingerprint and stored.reason == "top-up"
        assert ledger.verify(s).ok
    # The key is used: post_alone cannot tell a replay from a reuse, so it declines, and
    # post_entry answers (409's DuplicateEntry).
    assert alone(settings, customer_id, 700, reason="top-up", idempotency_key="a1") is None
    with pytest.raises(DuplicateEntry):
        credit(tx, customer_id, 700, reason="top-up", idempotency_key="a1")
    assert entry_count(tx) == 2


@pytest.mark.parametrize("backend", ["postgresql"])
def test_post_alone_declines_and_writes_nothing_when_it_cannot_decide_alone(
    settings: Settings, tx, customer_id: str
) -> None:
    credit(tx, customer_id, 1_000)
    declined = [
        alone(settings, customer_id, 1_001, is_credit=False),  # funds short: 400 to come
        alone(settings, "cus_missing", 1),  # no such wallet: 404 to come
        alone(settings, customer_id, MAX_AMOUNT),  # over the balance cap
    ]
    assert declined == [None] * len(declined)
    # Bad input is refused by the same validation as the transaction's, naming the field.
    for kw, field in (
        ({"amount": 0}, "amount"),
        ({"amount": 1, "idempotency_key": ""}, "idempotency_key"),
        ({"amount": 1, "currency": "EUR"}, "currency"),
    ):
        with pytest.raises(ValidationFailed) as refused:
            alone(settings, customer_id, **kw)
        assert refused.value.field == field
    # A lower-case currency is the same currency (it was refused here, accepted in a
    # transaction, before both shared one validation).
    assert alone(settings, customer_id, 1, currency="usd") is not None
    assert balance(tx, customer_id) == 1_001 and entry_count(tx) == 2


@pytest.mark.parametrize("backend", ["postgresql"])
def test_post_alone_leaves_a_low_balance_crossing_to_a_transaction(
    settings: Settings, tx, customer_id: str
) -> None:
    commit_hooks.install()  # as the web app, the worker and the CLI do
    watched = settings.with_overrides(low_balance_thresholds="USD=500")
    with transaction(watched) as s:  # the check before commit arms the wallet: normal
        ledger.post_entry(s, customer_id=customer_id, currency="USD", amount=1_000, is_credit=True)
    assert alone(watched, customer_id, 100) is not None  # 1,100: still normal
    with transaction(watched) as s:
        ledger.post_entry(s, customer_id=customer_id, currency="USD", amount=800, is_credit=False)
    with tx() as s:
        assert ledger.get_wallet(s, customer_id, "USD").low_state == "low"
    assert alone(watched, customer_id, 50) is not None  # 350: still low
    assert alone(watched, customer_id, 1_000) is None  # 1,350 would recover
    assert balance(tx, customer_id) == 350


@pytest.mark.parametrize("backend", ["postgresql"])
def test_post_alone_declines_for_customer_overrides_and_subscribers(
    settings: Settings, tx, customer_id: str
) -> None:
    credit(tx, customer_id, 1_000)
    with tx() as s:
        ledger.update_customer(s, customer_id, low_balance_thresholds={"USD": 10})
    assert alone(settings, customer_id, 1) is None  # the override is judged in Python
    with tx() as s:
        ledger.update_customer(s, customer_id, low_balance_thresholds=None)
    assert alone(settings, customer_id, 1) is not None
    # Someone wants wallet.ledger_entry.created: its outbox row must commit with the entry.
    subscribed = settings.with_overrides(
        notify_webhook_url="http://127.0.0.1:9/hook",
        notify_webhook_secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    )
    assert alone(subscribed, customer_id, 1) is None
    assert balance(tx, customer_id) == 1_001


@pytest.mark.parametrize("backend", ["sqlite"])
def test_post_alone_is_postgresql_only(settings: Settings, tx, customer_id: str) -> None:
    assert alone(settings, customer_id, 1) is None
    assert balance(tx, customer_id) == 0


@pytest.mark.parametrize("backend", ["postgresql"])
def test_post_alone_after_a_dropped_connection_reports_it_and_recovers(
    settings: Settings, tx, customer_id: str
) -> None:
    assert alone(settings, customer_id, 1) is not None  # a pooled connection now exists
    with get_engine(settings).connect() as other:
        other.exec_driver_sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    # The pooled connection is dead. A lost connection leaves a statement's outcome unknown,
    # so post_alone reports it (the route answers 503) rather than posting again itself; the
    # whole pool is discarded, so the next call works.
    with pytest.raises(OperationalError):
        alone(settings, customer_id, 1)
    assert alone(settings, customer_id, 1) is not None
    get_engine(settings).dispose()  # its connections died too (test_db covers that pool)
    assert balance(tx, customer_id) == 2


# -- debits that take what is there ---------------------------------------------------------


def take(s, customer_id: str, amount: int, **kw) -> ledger.Posted | None:
    return ledger.post_entry(
        s,
        customer_id=customer_id,
        currency="USD",
        amount=amount,
        is_credit=False,
        event_type="usage",
        on_short=ledger.OnShort.TAKE,
        **kw,
    )


def test_a_take_debit_takes_what_is_there(tx, customer_id: str) -> None:
    credit(tx, customer_id, 40)
    with tx() as s:
        posted = take(s, customer_id, 100)
    assert (posted.entry.amount, posted.wallet.balance, posted.shortfall) == (40, 0, 60)
    with tx() as s:
        assert take(s, customer_id, 5) is None
    assert entry_count(tx) == 2


def test_a_take_debit_with_a_used_key_is_a_duplicate_or_a_reuse(tx, customer_id: str) -> None:
    credit(tx, customer_id, 100)
    with tx() as s:
        take(s, customer_id, 30, idempotency_key="u1")
    with tx() as s, pytest.raises(DuplicateEntry):
        take(s, customer_id, 30, idempotency_key="u1")
    # The debit paths compare fingerprints too: another amount under the key is refused.
    with tx() as s, pytest.raises(IdempotencyKeyReused) as reused:
        take(s, customer_id, 31, idempotency_key="u1")
    assert reused.value.fields == ["amount"]
    assert balance(tx, customer_id) == 70


# -- listing -------------------------------------------------------------------------------


def test_list_entries_newest_first_with_paging_and_currency_filter(tx, customer_id: str) -> None:
    posted = [credit(tx, customer_id, n) for n in (1, 2, 3)]
    credit(tx, customer_id, 9, currency="INR")
    with tx() as s:
        usd = ledger.list_entries(s, customer_id, currency="usd")
        all_ = ledger.list_entries(s, customer_id)
        page0 = ledger.list_entries(s, customer_id, page_size=2)
        page1 = ledger.list_entries(s, customer_id, page_size=2, page_number=1)
        page9 = ledger.list_entries(s, customer_id, page_size=2, page_number=9)
    assert [e.amount for e in usd] == [3, 2, 1]
    assert [e.id for e in usd] == [p.entry.id for p in reversed(posted)]
    assert [e.amount for e in all_] == [9, 3, 2, 1]
    assert [e.amount for e in page0] == [9, 3]
    assert [e.amount for e in page1] == [2, 1]
    assert page9 == []


def test_list_entries_default_page_size_is_ten(tx, customer_id: str) -> None:
    with tx() as s:
        for n in range(1, 13):
            ledger.post_entry(s, customer_id=customer_id, currency="USD", amount=n, is_credit=True)
    with tx() as s:
        assert [e.amount for e in ledger.list_entries(s, customer_id)] == list(range(12, 2, -1))


@pytest.mark.parametrize(
    ("page_number", "page_size", "field"),
    [
        (-1, 10, "page_number"),
        (0, 0, "page_size"),
        (0, 101, "page_size"),
        (True, 10, "page_number"),
    ],
)
def test_list_entries_rejects_bad_paging(
    tx, customer_id: str, page_number: int, page_size: int, field: str
) -> None:
    with tx() as s, pytest.raises(ValidationFailed) as err:
        ledger.list_entries(s, customer_id, page_number=page_number, page_size=page_size)
    assert err.value.field == field


def test_list_entries_of_unknown_customer_or_currency(tx, customer_id: str) -> None:
    with tx() as s:
        with pytest.raises(CustomerNotFound):
            ledger.list_entries(s, "cus_missing")
        with pytest.raises(UnsupportedCurrency):
            ledger.list_entries(s, customer_id, currency="XXX")


# -- verify and the database's own guards --------------------------------------------------


def test_verify_passes_on_consistent_ledger(tx, customer_id: str) -> None:
    credit(tx, customer_id, 100)
    debit(tx, customer_id, 40)
    with tx() as s:
        report = ledger.verify(s)
    assert report.ok, report.problems
    assert (report.wallets, report.entries) == (2, 2)


def test_verify_reports_a_balance_drifted_behind_the_codes_back(
    settings: Settings, tx, customer_id: str
) -> None:
    credit(tx, customer_id, 100)
    with get_engine(settings).begin() as conn:
        conn.execute(
            text("UPDATE wallets SET balance = 90 WHERE customer_id = :c AND currency = 'USD'"),
            {"c": customer_id},
        )
    with tx() as s:
        report = ledger.verify(s)
    assert not report.ok
    assert report.problems == [
        f"wallet {customer_id}/USD: balance 90 but ledger sums to 100",
        f"wallet {customer_id}/USD: balance 90 but its credit lots hold 100",
    ]


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger_entries SET amount = amount + 1",
        "UPDATE ledger_entries SET reason = 'rewritten'",
        "DELETE FROM ledger_entries",
    ],
)
def test_database_refuses_to_rewrite_ledger_entries(
    settings: Settings, tx, customer_id: str, statement: str
) -> None:
    credit(tx, customer_id, 100)
    with pytest.raises(DBAPIError, match="immutable"), get_engine(settings).begin() as conn:
        conn.execute(text(statement))
    assert entry_count(tx) == 1
    with tx() as s:
        assert ledger.list_entries(s, customer_id)[0].amount == 100


def test_database_refuses_negative_balance_bypassing_the_code(
    settings: Settings, tx, customer_id: str
) -> None:
    with pytest.raises(IntegrityError), get_engine(settings).begin() as conn:
        conn.execute(
            text("UPDATE wallets SET balance = -1 WHERE customer_id = :c"), {"c": customer_id}
        )
    assert balance(tx, customer_id) == 0


@pytest.mark.parametrize(
    ("amount", "before", "after", "is_credit"),
    [(0, 0, 0, True), (5, 0, 4, True), (5, 10, 15, False), (5, 0, -5, False)],
)
def test_database_refuses_inconsistent_entries_bypassing_the_code(
    settings: Settings, customer_id: str, amount: int, before: int, after: int, is_credit: bool
) -> None:
    with pytest.raises(IntegrityError), get_engine(settings).begin() as conn:
        conn.execute(
            text(
                "INSERT INTO ledger_entries (id, business_id, customer_id, currency, amount, "
                "is_credit, before_balance, after_balance, event_type, fingerprint, created_at) "
                "VALUES ('wle_bad', 'b', :c, 'USD', :a, :ic, :b, :af, 'payment', 'f', "
                "CURRENT_TIMESTAMP)"
            ),
            {"c": customer_id, "a": amount, "ic": is_credit, "b": before, "af": after},
        )


def test_database_refuses_second_entry_with_same_key_bypassing_the_code(
    settings: Settings, tx, customer_id: str
) -> None:
    posted = credit(tx, customer_id, 10, idempotency_key="k")
    row = {
        "c": customer_id,
        "seq_id": "wle_again",
        "k": posted.entry.idempotency_key,
    }
    with pytest.raises(IntegrityError), get_engine(settings).begin() as conn:
        conn.execute(
            text(
                "INSERT INTO ledger_entries (id, business_id, customer_id, currency, amount, "
                "is_credit, before_balance, after_balance, event_type, idempotency_key, "
                "fingerprint, created_at) VALUES (:seq_id, 'b', :c, 'USD', 10, true, 10, 20, "
                "'payment', :k, 'f', CURRENT_TIMESTAMP)"
            ),
            row,
        )
