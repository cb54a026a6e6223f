"""Parallel inbox batches (``worker.inbox.lanes``): several worker processes drain thousands of
events over overlapping customers with no deadlock, each event applied exactly once, each
customer's events in arrival order, every balance exact."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
from collections import defaultdict

import pytest
from sqlalchemy import select

from tests.support.processes import ROOT, process_env
from tests.support.webhooks import dodo_payment, dodo_refund
from worker import inbox, ledger
from worker.infra.db import transaction
from worker.models import InboxEvent, LedgerEntry, Wallet

# PostgreSQL, directly and through PgBouncer in transaction pooling mode.
pytestmark = pytest.mark.parametrize("backend", ["postgresql", "pgbouncer"], indirect=True)

WORKERS = 4
CUSTOMERS = 24
PAYMENTS = 2400
REFUND_EVERY = 8  # one refund of half a payment per this many payments, after it
BATCH = 50
GIVE_UP_SECONDS = 300  # a worker that has not seen the inbox empty by then reports and exits


def _events(seed: int) -> list[tuple[str, str, dict]]:
    """(customer, key of the ledger effect, payload) in arrival order: payments of both
    currencies over every customer, interleaved, and refunds of some of them later on."""
    rng = random.Random(seed)
    out: list[tuple[str, str, dict]] = []
    paid: list[tuple[str, str, str, int]] = []
    for n in range(PAYMENTS):
        customer = f"cus_stress{rng.randrange(CUSTOMERS):02d}"
        currency = rng.choice(["USD", "INR"])
        amount = 100 + n
        payment_id = f"pay_s{n}"
        payload = dodo_payment(
            payment_id=payment_id,
            customer_id=customer,
            email=f"{customer}@example.com",
            total=amount,
            wallet_credit=str(amount),
            currency=currency,
        )
        out.append((customer, f"payment:{payment_id}", payload))
        paid.append((customer, payment_id, currency, amount))
        if n % REFUND_EVERY == REFUND_EVERY - 1:
            customer, refunded, currency, amount = paid[rng.randrange(len(paid) - 5)]
            paid = [p for p in paid if p[1] != refunded]
            refund = dodo_refund(refunded, amount // 2, refund_id=f"ref_s{n}")
            refund["data"]["currency"] = currency
            refund["data"]["customer"]["customer_id"] = customer
            refund["data"]["customer"]["email"] = f"{customer}@example.com"
            out.append((customer, f"refund:ref_s{n}", refund))
    return out


def _store(settings, events) -> list[int]:  # type: ignore[no-untyped-def]
    ids = []
    for start in range(0, len(events), 200):
        with transaction(settings) as s:
            for n, (_, key, payload) in enumerate(events[start : start + 200], start):
                ids.append(
                    inbox.record_event(
                        s,
                        provider="dodo",
                        provider_event_id=f"msg_{n}_{key}",
                        event_type=payload["type"],
                        payload=payload,
                    )
                )
    return ids


def test_parallel_batches_never_deadlock_and_apply_each_event_once_in_order(
    settings, tmp_path
) -> None:
    events = _events(seed=18)
    with transaction(settings) as s:  # half the customers exist, the others arrive with a payment
        for c in range(0, CUSTOMERS, 2):
            customer = f"cus_stress{c:02d}"
            ledger.create_customer(
                s, email=f"{customer}@example.com", name=customer, customer_id=customer
            )
    head = len(events) // 3
    ids = _store(settings, events[:head])
    done = tmp_path / "all-stored"
    env = process_env(PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "tests.support.inbox_stress", settings.database_url]
    workers = [
        subprocess.Popen(
            [*command, str(done), str(BATCH), str(GIVE_UP_SECONDS), settings.database_pooler],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(WORKERS)
    ]
    try:
        # The rest arrives while the workers run, as it would from the receiver.
        ids += _store(settings, events[head:])
        done.touch()
        reports = []
        for proc in workers:
            out, _ = proc.communicate(timeout=GIVE_UP_SECONDS + 60)
            assert proc.returncode == 0
            reports.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    # No deadlock and no other database error in any worker; all of them did some of the work.
    assert [r["errors"] for r in reports] == [{}] * WORKERS
    assert sum(r["applied"] for r in reports) == len(events)
    assert all(r["applied"] > 0 for r in reports), reports

    with transaction(settings) as s:
        statuses = dict(s.execute(select(InboxEvent.id, InboxEvent.status)).all())
        rows = s.execute(
            select(
                LedgerEntry.customer_id,
                LedgerEntry.currency,
                LedgerEntry.idempotency_key,
                LedgerEntry.amount,
                LedgerEntry.is_credit,
            ).order_by(LedgerEntry.seq)
        ).all()
        balances = {(w.customer_id, w.currency): w.balance for w in s.scalars(select(Wallet))}
        problems = ledger.verify(s).problems
    assert set(statuses.values()) == {"processed"} and len(statuses) == len(events)
    # Exactly once: one entry per event, under the event's own business key.
    assert sorted(r.idempotency_key for r in rows) == sorted(key for _, key, _ in events)
    # In arrival order per customer: the ledger's sequence follows the inbox's.
    expected, actual = defaultdict(list), defaultdict(list)
    for customer, key, _ in events:
        expected[customer].append(key)
    for r in rows:
        actual[r.customer_id].append(r.idempotency_key)
    assert actual == expected
    # Exact balances: what was credited less what was reversed, wallet by wallet.
    sums: dict[tuple[str, str], int] = defaultdict(int)
    for r in rows:
        sums[(r.customer_id, r.currency)] += r.amount if r.is_credit else -r.amount
    assert {k: v for k, v in balances.items() if v or k in sums} == dict(sums)
    credited = sum(100 + n for n in range(PAYMENTS))
    assert sum(sums.values()) == credited - sum(
        int(p["data"]["amount"]) for _, key, p in events if key.startswith("refund:")
    )
    assert problems == []


def test_two_batches_take_different_customers_at_the_same_time(settings, tx) -> None:
    """The second batch does not wait for the first: it takes the customers the first does
    not hold, and leaves the held customer's events for later, in order."""
    for n, customer in enumerate(["cus_a", "cus_b", "cus_a", "cus_b"]):
        payload = dodo_payment(
            payment_id=f"pay_{n}", customer_id=customer, email=f"{customer}@example.com"
        )
        with tx() as s:
            inbox.record_event(
                s,
                provider="dodo",
                provider_event_id=f"m{n}",
                event_type="payment.succeeded",
                payload=payload,
            )
    with transaction(settings) as first:
        taken = inbox.process_pending(first, limit=2)
        assert [o.status for o in taken.outcomes] == ["processed", "processed"]
        assert taken.more
        result: dict[str, inbox.Batch] = {}

        def second() -> None:
            with transaction(settings) as s:
                result["batch"] = inbox.process_pending(s, limit=10)

        thread = threading.Thread(target=second)
        thread.start()
        thread.join(timeout=30)
        assert not thread.is_alive()  # it never waited on the first batch's locks
    mine = {o.event_id for o in taken.outcomes}
    theirs = {o.event_id for o in result["batch"].outcomes}
    assert mine.isdisjoint(theirs) and len(mine | theirs) == 4
    with tx() as s:
        left = s.scalars(select(InboxEvent.id).where(InboxEvent.status == "pending")).all()
    assert left == []


def test_a_lane_is_the_customer_the_handler_will_find(settings, tx) -> None:
    """By id, else by email (a Dodo id we do not know, for a customer we know by email), a
    refund by the customer its payment credited, and no lane shared for an event naming no
    one."""
    from worker.inbox import lanes
    from worker.models import TopupPayment

    with tx() as s:
        ledger.create_customer(s, email="Known@example.com", name="K", customer_id="cus_known")
        s.add(
            TopupPayment(
                provider="dodo",
                payment_id="pay_old",
                customer_id="cus_known",
                currency="USD",
                credited_amount=100,
                payment_amount=100,
                payment_currency="USD",
                reversed_amount=0,
            )
        )
    by_email = dodo_payment(customer_id="cus_dodo_side", email="known@example.com")
    refund = dodo_refund("pay_old", 50)
    refund["data"]["customer"]["customer_id"] = "cus_someone_else"
    new = dodo_payment(customer_id="cus_new", email="new@example.com")
    with tx() as s:
        resolved = lanes.resolve(
            s,
            [
                (1, lanes.candidates("dodo", by_email)),
                (2, lanes.candidates("dodo", refund)),
                (3, lanes.candidates("dodo", new)),
                (4, lanes.candidates("stripe", {"type": "x", "data": {"object": {}}})),
            ],
        )
    assert resolved == {
        1: "customer:cus_known",
        2: "customer:cus_known",
        3: "customer:cus_new",
        4: "event:4",
    }
