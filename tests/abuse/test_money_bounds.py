"""Abuse: what an attacker holding an ordinary API key tries against money bounds and what an
operator's slip could destroy, against the real server (gunicorn, several processes) on
PostgreSQL.

- 16 concurrent refunds to wallet of one payment never give back more than the payment;
- a refund of a payment the service never saw, or of another customer's, is 422 naming
  ``payment_id`` and changes nothing;
- ``db downgrade`` names its revision and refuses to drop a ledger that holds entries.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from tests.support.charges import paid
from tests.support.cli import run_cli_process
from tests.support.processes import create_pg_database, drop_pg_database, gunicorn, process_env
from worker import ledger
from worker.config import Settings
from worker.infra import migrate
from worker.infra.db import get_engine, transaction
from worker.models import LedgerEntry, RefundedPayment

pytestmark = pytest.mark.slow

API_KEY = "abuse-key-0123456789abcdef0123456789"
REFUNDS = 16
REFUND = 700
PAYMENT = 5000  # room for 7 refunds of 700 (4900), not an 8th


class Service:
    def __init__(self, settings: Settings, base: str) -> None:
        self.settings = settings
        self.base = base

    def tx(self):  # type: ignore[no-untyped-def]
        return transaction(self.settings)

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30
        )

    def customer(self, email: str) -> str:
        with self.client() as c:
            r = c.post("/customers", json={"email": email, "name": email.split("@")[0]})
        assert r.status_code == 200, r.text
        return r.json()["customer_id"]

    def balance(self, customer_id: str) -> int:
        with self.tx() as s:
            return ledger.get_wallet(s, customer_id, "USD").balance

    def refunds(self, customer_id: str) -> list[int]:
        with self.tx() as s:
            return list(
                s.scalars(
                    select(LedgerEntry.amount).where(
                        LedgerEntry.customer_id == customer_id, LedgerEntry.event_type == "refund"
                    )
                )
            )


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """gunicorn, 4 processes x 4 threads, on a PostgreSQL database of its own."""
    name, url = create_pg_database("bw_abuse_money")
    settings = Settings(database_url=url)
    tmp = tmp_path_factory.mktemp("abuse-money")
    try:
        migrate.upgrade(settings)
        env = process_env(DATABASE_URL=url, BILLING_API_KEY=API_KEY)
        with gunicorn(env, tmp, workers=4, extra=["--threads", "4"]) as base:
            yield Service(settings, base)
        assert "Traceback" not in "".join(p.read_text() for p in Path(tmp).glob("gunicorn-*.log"))
    finally:
        get_engine(settings).dispose()
        drop_pg_database(name)


def refund(client: httpx.Client, customer_id: str, **body: Any) -> httpx.Response:
    return client.post(
        f"/customers/{customer_id}/wallets/refunds", json={"currency": "USD", **body}
    )


def test_16_concurrent_refunds_of_one_payment_never_exceed_it(service: Service) -> None:
    cid = service.customer("hot@example.com")
    paid(service.tx, cid, PAYMENT, "pay_hot")
    start = threading.Barrier(REFUNDS)

    def one(i: int) -> httpx.Response:
        with service.client() as c:
            start.wait(timeout=30)
            return refund(c, cid, amount=REFUND, payment_id="pay_hot", refund_id=f"rfd_{i}")

    with ThreadPoolExecutor(REFUNDS) as pool:
        answers = list(pool.map(one, range(REFUNDS)))

    statuses = Counter(r.status_code for r in answers)
    assert statuses == {200: PAYMENT // REFUND, 422: REFUNDS - PAYMENT // REFUND}, statuses
    refused = [r.json() for r in answers if r.status_code == 422]
    assert {(e["code"], e["field"]) for e in refused} == {("REFUND_EXCEEDS_PAYMENT", "amount")}
    assert {e["remaining_amount"] for e in refused} == {PAYMENT % REFUND}
    # Exactly the successes are accounted: in the ledger, the wallet and the payment's total.
    credited = [r.json()["entry"]["amount"] for r in answers if r.status_code == 200]
    assert sorted(service.refunds(cid)) == sorted(credited) == [REFUND] * (PAYMENT // REFUND)
    assert service.balance(cid) == sum(credited) <= PAYMENT
    with service.tx() as s:
        total = s.get(RefundedPayment, (cid, "pay_hot"))
        assert (total.payment_amount, total.refunded_amount) == (PAYMENT, sum(credited))
        assert ledger.verify(s).ok


def test_a_refund_of_a_payment_never_seen_is_422_naming_payment_id(service: Service) -> None:
    cid = service.customer("mallory@example.com")
    with service.client() as c:
        for attempt in range(3):  # the attack: the same fake payment, three times
            r = refund(c, cid, amount=REFUND, payment_id="pay_fake", refund_id=f"r{attempt}")
            assert r.status_code == 422, r.text
            assert (r.json()["code"], r.json()["field"]) == ("UNKNOWN_PAYMENT", "payment_id")
    assert service.balance(cid) == 0
    assert service.refunds(cid) == []


def test_a_refund_of_another_customers_payment_is_422_naming_payment_id(service: Service) -> None:
    victim = service.customer("victim@example.com")
    thief = service.customer("thief@example.com")
    paid(service.tx, victim, PAYMENT, "pay_victim")
    with service.client() as c:
        r = refund(c, thief, amount=REFUND, payment_id="pay_victim")
        fake = refund(c, thief, amount=REFUND, payment_id="pay_nobody")
    assert r.status_code == 422, r.text
    assert (r.json()["code"], r.json()["field"]) == ("UNKNOWN_PAYMENT", "payment_id")
    # The same answer as for a payment that does not exist: nothing learnt about the victim.
    assert r.json()["message"].replace("pay_victim", "X") == fake.json()["message"].replace(
        "pay_nobody", "X"
    )
    assert service.balance(thief) == 0
    with service.tx() as s:
        assert s.scalar(select(func.count()).select_from(RefundedPayment).where(
            RefundedPayment.customer_id == thief
        )) == 0  # fmt: skip


def test_db_downgrade_refuses_to_drop_a_ledger_with_entries(service: Service) -> None:
    cid = service.customer("keeper@example.com")
    with service.client() as c:
        r = c.post(
            f"/customers/{cid}/wallets/ledger-entries",
            json={"amount": 100, "currency": "USD", "entry_type": "credit"},
        )
    assert r.status_code == 200, r.text
    with service.tx() as s:
        entries = s.scalar(select(func.count()).select_from(LedgerEntry))
    url = service.settings.database_url

    bare = run_cli_process(url, "db", "downgrade")
    assert (bare.returncode, bare.stdout) == (2, "")
    assert bare.stderr.count("\n") == 1 and "needs the revision" in bare.stderr

    refused = run_cli_process(url, "db", "downgrade", "base")
    assert (refused.returncode, refused.stdout) == (2, "")
    assert refused.stderr == (
        f"billing-worker: downgrading to base drops the ledger, which holds {entries} entries;"
        " pass --drop-ledger to destroy them\n"
    )
    # Nothing changed: the server still answers from the same ledger.
    with service.client() as c:
        wallets = c.get(f"/customers/{cid}/wallets")
    assert wallets.status_code == 200
    assert service.balance(cid) == 100
    with service.tx() as s:
        assert s.scalar(select(func.count()).select_from(LedgerEntry)) == entries
