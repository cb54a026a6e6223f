"""Many writers at once: threads with their own connections, and separate OS processes.

PostgreSQL is the production target (READ COMMITTED, conditional UPDATE ... RETURNING); the
last test runs a few processes against one SQLite file (BEGIN IMMEDIATE + busy_timeout).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.support.processes import ROOT, process_env
from worker import ledger
from worker.config import Settings
from worker.errors import DuplicateEntry, IdempotencyKeyReused, InsufficientBalance
from worker.infra.db import transaction
from worker.models import LedgerEntry

THREADS = 16
DEBITS_PER_THREAD = 50


@pytest.fixture(params=["postgresql", "pgbouncer"])
def backend(request: pytest.FixtureRequest) -> str:
    """These tests run on PostgreSQL, directly and through PgBouncer (transaction pooling),
    unless they ask for SQLite themselves."""
    return request.param


def _funded_customer(settings: Settings, amount: int) -> str:
    with transaction(settings) as s:
        customer, _ = ledger.create_customer(s, email="hot@example.com", name="Hot")
        ledger.post_entry(
            s, customer_id=customer.customer_id, currency="USD", amount=amount, is_credit=True
        )
        return customer.customer_id


def _post(settings: Settings, style: str, **entry: object) -> ledger.Posted:
    """One entry as its own transaction: ``post_entry`` in ``transaction()``, or the way the
    ledger-entries route does it, ``post_own``: one autocommitted statement, or a transaction
    when that cannot decide."""
    if style == "alone":
        key = ledger.client_key(entry.pop("idempotency_key", None))  # type: ignore[arg-type]
        return ledger.post_own(settings, ledger.Leg(key=key, **entry))  # type: ignore[arg-type]
    with transaction(settings) as s:
        return ledger.post_entry(s, **entry)  # type: ignore[arg-type]


STYLES = pytest.mark.parametrize("style", ["in_transaction", "alone"])


def _assert_exact_outcome(
    settings: Settings, customer_id: str, start: int, debited: list[int], refused: list[list[int]]
) -> None:
    """Every accepted debit is in the ledger, every refusal was deserved, the sum is exact."""
    with transaction(settings) as s:
        final = ledger.get_wallet(s, customer_id, "USD").balance
        entries = s.scalar(
            select(func.count())
            .select_from(LedgerEntry)
            .where(LedgerEntry.customer_id == customer_id, LedgerEntry.is_credit.is_(False))
        )
        report = ledger.verify(s)
    assert report.ok, report.problems
    assert entries == len(debited)
    assert final == start - sum(debited)
    assert final >= 0
    # Debits only ever lower the balance, so a refusal at balance b means the final balance is
    # at most b: no refused debit could have fitted, i.e. exactly what the balance allowed won.
    for amount, seen in refused:
        assert seen < amount
        assert final < amount
    assert refused, "the workload must exhaust the wallet for the test to mean anything"


@STYLES
def test_threads_debit_one_wallet_exactly_as_far_as_the_balance_allows(
    settings: Settings, style: str
) -> None:
    rng = random.Random(2)
    plans = [[rng.randint(1, 100) for _ in range(DEBITS_PER_THREAD)] for _ in range(THREADS)]
    start = sum(map(sum, plans)) // 2
    customer_id = _funded_customer(settings, start)
    debited: list[int] = []
    refused: list[list[int]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(THREADS)
    lock = threading.Lock()

    def work(plan: list[int]) -> None:
        try:
            barrier.wait(timeout=30)
            for amount in plan:
                try:
                    _post(
                        settings,
                        style,
                        customer_id=customer_id,
                        currency="USD",
                        amount=amount,
                        is_credit=False,
                    )
                    with lock:
                        debited.append(amount)
                except InsufficientBalance as exc:
                    with lock:
                        refused.append([amount, exc.balance])
        except BaseException as exc:  # surfaced below: a thread must not fail silently
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(plan,)) for plan in plans]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert len(debited) + len(refused) == THREADS * DEBITS_PER_THREAD
    _assert_exact_outcome(settings, customer_id, start, debited, refused)


@STYLES
@pytest.mark.parametrize("is_credit", [True, False])
def test_same_key_raced_by_16_threads_posts_exactly_one_entry(
    settings: Settings, is_credit: bool, style: str
) -> None:
    customer_id = _funded_customer(settings, 1_000)
    outcomes: list[str] = []
    barrier = threading.Barrier(THREADS)
    lock = threading.Lock()

    def work() -> None:
        barrier.wait(timeout=30)
        try:
            posted = _post(
                settings,
                style,
                customer_id=customer_id,
                currency="USD",
                amount=300,
                is_credit=is_credit,
                idempotency_key="race",
            )
            outcome = posted.entry.id
        except DuplicateEntry as exc:
            outcome = f"dup:{exc.entry.id}"
        except BaseException as exc:
            outcome = f"error:{exc!r}"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=work) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    winners = [o for o in outcomes if o.startswith("wle_")]
    assert len(outcomes) == THREADS
    assert len(winners) == 1, outcomes
    assert sorted(outcomes) == sorted(winners + [f"dup:{winners[0]}"] * (THREADS - 1))
    with transaction(settings) as s:
        assert ledger.get_wallet(s, customer_id, "USD").balance == (1_300 if is_credit else 700)
        assert len(ledger.list_entries(s, customer_id)) == 2
        assert ledger.verify(s).ok


def test_same_key_raced_with_different_currencies_posts_one_entry(settings: Settings) -> None:
    with transaction(settings) as s:
        customer, _ = ledger.create_customer(s, email="mix@example.com", name="Mix")
    barrier = threading.Barrier(8)
    outcomes: list[str] = []
    lock = threading.Lock()

    def work(currency: str) -> None:
        barrier.wait(timeout=30)
        try:
            with transaction(settings) as s:
                ledger.post_entry(
                    s,
                    customer_id=customer.customer_id,
                    currency=currency,
                    amount=5,
                    is_credit=True,
                    idempotency_key="k",
                )
            outcome = "posted:" + currency
        except DuplicateEntry:
            outcome = "duplicate:" + currency
        except IdempotencyKeyReused as exc:
            outcome = "reused:" + ",".join(exc.fields)
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=work, args=(c,)) for c in ["USD", "INR"] * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    posted = [o for o in outcomes if o.startswith("posted:")]
    assert len(posted) == 1, outcomes
    winner = posted[0].split(":")[1]
    assert outcomes.count("duplicate:" + winner) == 3
    assert outcomes.count("reused:currency") == 4
    with transaction(settings) as s:
        assert sum(w.balance for w in ledger.get_wallets(s, customer.customer_id)) == 5


def _hammer(
    settings: Settings, customer_id: str, plans: list[list[int]], tmp_path: Path, key: str = ""
) -> list[dict]:
    """Run one ``tests.support.hammer`` process per plan, all released at once; their reports."""
    go = tmp_path / "go"
    args = [settings.database_url, customer_id]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.support.hammer", *args, ",".join(map(str, p)), str(go)]
            + ([key] if key else []),
            env=process_env(DATABASE_POOLER=settings.database_pooler),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in plans
    ]
    go.touch()
    reports = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        reports.append(json.loads(out))
    return reports


def _verify_through_cli(settings: Settings) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "worker", "verify"],
        env=process_env(
            DATABASE_URL=settings.database_url, DATABASE_POOLER=settings.database_pooler
        ),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_processes_debit_one_wallet_exactly_as_far_as_the_balance_allows(
    settings: Settings, tmp_path: Path
) -> None:
    rng = random.Random(3)
    plans = [[rng.randint(1, 100) for _ in range(40)] for _ in range(4)]
    start = sum(map(sum, plans)) // 2
    customer_id = _funded_customer(settings, start)
    reports = _hammer(settings, customer_id, plans, tmp_path)
    debited = [a for r in reports for a in r["debited"]]
    refused = [x for r in reports for x in r["refused"]]
    assert len(debited) + len(refused) == 160
    _assert_exact_outcome(settings, customer_id, start, debited, refused)
    assert _verify_through_cli(settings).startswith("OK: ")


def test_processes_racing_one_key_post_exactly_one_entry(
    settings: Settings, tmp_path: Path
) -> None:
    customer_id = _funded_customer(settings, 1_000)
    reports = _hammer(settings, customer_id, [[250]] * 4, tmp_path, key="usage:evt_1")
    assert sum(len(r["debited"]) for r in reports) == 1
    assert sum(r["duplicates"] for r in reports) == 3
    with transaction(settings) as s:
        assert ledger.get_wallet(s, customer_id, "USD").balance == 750
    assert _verify_through_cli(settings).startswith("OK: ")


@pytest.mark.parametrize("backend", ["sqlite"])
def test_sqlite_processes_share_one_file_safely(
    backend: str, settings: Settings, tmp_path: Path
) -> None:
    rng = random.Random(4)
    plans = [[rng.randint(1, 100) for _ in range(25)] for _ in range(3)]
    start = sum(map(sum, plans)) // 2
    customer_id = _funded_customer(settings, start)
    reports = _hammer(settings, customer_id, plans, tmp_path)
    debited = [a for r in reports for a in r["debited"]]
    refused = [x for r in reports for x in r["refused"]]
    assert len(debited) + len(refused) == 75
    _assert_exact_outcome(settings, customer_id, start, debited, refused)
    assert _verify_through_cli(settings).startswith("OK: ")


def _race(workers: int, fn) -> list[object]:  # type: ignore[no-untyped-def]
    """Run ``fn()`` in ``workers`` threads released together; their results or exceptions."""
    barrier = threading.Barrier(workers)
    results: list[object] = []
    lock = threading.Lock()

    def work() -> None:
        barrier.wait(timeout=30)
        try:
            result: object = fn()
        except BaseException as exc:
            result = exc
        with lock:
            results.append(result)

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def test_customers_created_concurrently_with_one_email_are_one_customer(
    settings: Settings,
) -> None:
    def create() -> tuple[str, bool]:
        with transaction(settings) as s:
            customer, created = ledger.create_customer(s, email="Race@Example.com", name="R")
            return customer.customer_id, created

    results = _race(8, create)
    assert all(isinstance(r, tuple) for r in results), results
    assert len({r[0] for r in results}) == 1
    assert sorted(r[1] for r in results) == [False] * 7 + [True]
    with transaction(settings) as s:
        assert len(ledger.list_customers(s)) == 1
        assert len(ledger.get_wallets(s, results[0][0])) == 2


def test_concurrent_credits_in_a_newly_configured_currency_share_one_wallet(
    settings: Settings,
) -> None:
    with transaction(settings) as s:
        customer, _ = ledger.create_customer(s, email="eur@example.com", name="E")
    wider = settings.with_overrides(wallet_currencies=("USD", "INR", "EUR"))

    def credit() -> int:
        with transaction(wider) as s:
            return ledger.post_entry(
                s, customer_id=customer.customer_id, currency="EUR", amount=10, is_credit=True
            ).wallet.balance

    results = _race(8, credit)
    assert sorted(results) == [10, 20, 30, 40, 50, 60, 70, 80], results
    with transaction(wider) as s:
        assert ledger.get_wallet(s, customer.customer_id, "EUR").balance == 80
        assert ledger.verify(s).ok
