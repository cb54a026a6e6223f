"""Holds raced by real OS processes on PostgreSQL (each process several threads, each thread
its own transaction, all released at once): the wallet's row lock decides every race, so
there is one outcome and nothing negative."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.support.processes import ROOT, process_env
from worker import ledger
from worker.config import Settings
from worker.infra.db import transaction
from worker.ledger import holds
from worker.models import LedgerEntry, Wallet, WalletHold


@pytest.fixture(params=["postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    """PostgreSQL: SQLite serialises every writer, so there is no race to lose there."""
    return request.param


def funded(settings: Settings, amount: int) -> str:
    with transaction(settings) as s:
        customer, _ = ledger.create_customer(s, email="race@example.com", name="Race")
        ledger.post(s, [ledger.Leg(customer.customer_id, "USD", amount, is_credit=True)])
        return customer.customer_id


def hammer(settings: Settings, tmp_path: Path, plans: list[tuple[str, str, str, int]]) -> list:
    """One ``tests.support.hold_hammer`` process per (mode, customer, arg, threads), released
    together; every thread's result."""
    go = tmp_path / f"go-{len(list(tmp_path.iterdir()))}"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.support.hold_hammer",
                settings.database_url,
                mode,
                customer,
                arg,
                str(go),
                str(threads),
            ],
            env=process_env(),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for mode, customer, arg, threads in plans
    ]
    go.touch()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        results += json.loads(out)
    return results


def state(settings: Settings, cid: str) -> tuple[int, int, Counter]:
    with transaction(settings) as s:
        w = s.get(Wallet, (cid, "USD"))
        statuses = Counter(
            s.scalars(select(WalletHold.status).where(WalletHold.customer_id == cid))
        )
        report = ledger.verify(s)
    assert report.ok, report.problems
    return w.balance, w.held, statuses


def test_32_concurrent_holds_on_a_balance_for_10_leave_exactly_10_active(
    settings: Settings, tmp_path: Path
) -> None:
    cid = funded(settings, 1000)
    results = hammer(settings, tmp_path, [("hold", cid, "100", 4)] * 8)
    assert Counter(r.get("ok") or r["error"] for r in results) == {
        "active": 10,
        "INSUFFICIENT_BALANCE": 22,
    }
    balance, held, statuses = state(settings, cid)
    assert (balance, held, statuses) == (1000, 1000, Counter(active=10))


def test_debits_racing_holds_never_spend_held_money(settings: Settings, tmp_path: Path) -> None:
    cid = funded(settings, 1000)
    results = hammer(
        settings,
        tmp_path,
        [("hold", cid, "70", 4)] * 3 + [("debit", cid, ",".join(["30"] * 5), 2)] * 3,
    )
    held_ok = sum(70 for r in results if r.get("ok") == "active")
    debited = sum(r["ok"] for r in results if isinstance(r.get("ok"), int))
    assert held_ok + debited <= 1000
    balance, held, _ = state(settings, cid)
    assert (balance, held) == (1000 - debited, held_ok)
    assert balance >= held
    # Whatever was refused was refused for want of available money, never more than that.
    assert {r["error"] for r in results if "error" in r} <= {"INSUFFICIENT_BALANCE"}
    if any("error" in r for r in results):
        assert balance - held < 70


def test_repeated_captures_of_one_hold_debit_once(settings: Settings, tmp_path: Path) -> None:
    cid = funded(settings, 1000)
    with transaction(settings) as s:
        hold = holds.create_hold(s, customer_id=cid, currency="USD", amount=500, actor="t").hold
    results = hammer(
        settings,
        tmp_path,
        [("capture", cid, f"{hold.hold_id}:200", 4)] * 3
        + [("capture", cid, f"{hold.hold_id}:300", 4)],
    )
    winners = [r for r in results if r.get("ok") == "captured" and not r["replayed"]]
    assert len(winners) == 1
    won = winners[0]["captured"]
    for r in results:
        if r.get("ok") == "captured":
            assert r["captured"] == won  # replays answer the one capture
        else:
            assert r["error"] == "HOLD_NOT_ACTIVE"  # a capture for the other amount
    balance, held, statuses = state(settings, cid)
    assert (balance, held, statuses) == (1000 - won, 0, Counter(captured=1))
    with transaction(settings) as s:
        assert s.scalar(select(func.count()).where(~LedgerEntry.is_credit)) == 1


def test_captures_racing_the_expiry_task_end_each_hold_once(
    settings: Settings, tmp_path: Path
) -> None:
    cid = funded(settings, 1000)
    with transaction(settings) as s:
        made = [
            holds.create_hold(
                s, customer_id=cid, currency="USD", amount=100, actor="t", expires_in_seconds=2
            ).hold
            for _ in range(8)
        ]
    # Processes start in about a second here: the captures and the expiry runs meet around
    # the holds' expiry, some before it and some after.
    results = hammer(
        settings,
        tmp_path,
        [("capture", cid, f"{h.hold_id}:60", 1) for h in made] + [("expire", cid, "-", 2)] * 2,
    )
    captured = {r["hold_id"] for r in results if r.get("ok") == "captured"}
    refused = [r for r in results if "error" in r]
    assert all(r["error"] == "HOLD_NOT_ACTIVE" for r in refused)
    assert len(captured) + len(refused) == 8
    with transaction(settings) as s:
        holds.expire_holds(s, now=made[0].expires_at.replace(year=made[0].expires_at.year + 1))
    balance, held, statuses = state(settings, cid)
    assert statuses == Counter(captured=len(captured), expired=8 - len(captured))
    assert (balance, held) == (1000 - 60 * len(captured), 0)
    with transaction(settings) as s:
        debits = s.scalar(select(func.count()).where(~LedgerEntry.is_credit))
    assert debits == len(captured)
