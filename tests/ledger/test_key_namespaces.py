"""A client's idempotency keys can never equal the system's own.

For every kind of internal effect, an attacker holding an ordinary API key posts a ledger
entry first with a key shaped exactly like the one the system will derive; the effect then
happens exactly as it would have without it. On SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from tests.support.charges import paid
from tests.support.usage import PRICING, new_customer
from tests.support.webhooks import dodo_payment, dodo_refund
from webhooks import create_app
from worker import charges, inbox, ledger, usage
from worker.config import Settings
from worker.models import LedgerEntry, UsageEvent

AUTH = {"Authorization": "Bearer test-key"}
ADA = "cus_8VbC6JDZzPEqfBPUdpj0K"


@pytest.fixture
def client(settings: Settings) -> Iterator[FlaskClient]:
    """A test client of the app on the test database, bootstrap key ``test-key``."""
    yield create_app(settings).test_client()


def attack(client: FlaskClient, customer_id: str, key: str, amount: int = 1) -> None:
    """The ledger-entries call an attacker makes first, with a key shaped like a system key."""
    r = client.post(
        f"/customers/{customer_id}/wallets/ledger-entries",
        json={"currency": "USD", "entry_type": "credit", "amount": amount, "idempotency_key": key},
        headers=AUTH,
    )
    assert r.status_code == 200, r.get_data(as_text=True)


def balance(tx, customer_id: str) -> int:
    with tx() as s:
        return ledger.get_wallet(s, customer_id, "USD").balance


def system_entry(tx, customer_id: str, key: str) -> LedgerEntry | None:
    with tx() as s:
        return ledger.find_entry(s, customer_id, ledger.system_key(key))


def deliver(tx, payload: dict) -> inbox.Outcome:
    with tx() as s:
        stored = inbox.record_event(
            s,
            provider="dodo",
            provider_event_id=f"msg_{payload['type']}_{payload['data'].get('payment_id')}",
            event_type=payload["type"],
            payload=payload,
        )
    with tx() as s:
        return inbox.process_event(s, stored)


def ada(tx) -> str:
    with tx() as s:
        ledger.create_customer(s, email="ada@example.com", name="Ada", customer_id=ADA)
    return ADA


def test_a_payment_credit_is_not_blocked_by_a_client_key_of_its_shape(tx, client) -> None:
    attack(client, ada(tx), "payment:pay_1", amount=2000)
    assert deliver(tx, dodo_payment(payment_id="pay_1", wallet_credit="2000")).status == (
        "processed"
    )
    assert balance(tx, ADA) == 4000
    credited = system_entry(tx, ADA, "payment:pay_1")
    assert credited is not None and (credited.event_type, credited.amount) == ("payment", 2000)


def test_a_refund_reversal_is_not_blocked_by_a_client_key_of_its_shape(tx, client) -> None:
    ada(tx)
    deliver(tx, dodo_payment(payment_id="pay_1", wallet_credit="2000", total=2000))
    attack(client, ADA, "refund:ref_1")
    assert deliver(tx, dodo_refund("pay_1", 2000, refund_id="ref_1")).status == "processed"
    assert balance(tx, ADA) == 1  # the whole top-up taken back; the attacker's 1 stays
    reversed_ = system_entry(tx, ADA, "refund:ref_1")
    assert reversed_ is not None and (reversed_.event_type, reversed_.amount) == (
        "payment_reversal",
        2000,
    )


def test_usage_billing_is_not_stalled_by_client_keys_of_its_shape(tx, client) -> None:
    with tx() as s:
        cid = new_customer(s, "u@example.com", credit=100)
    # The first event's seq is 1 in a fresh database: every plausible batch key is taken.
    for last in range(1, 11):
        attack(client, cid, f"usage:1-{last}:USD")
    with tx() as s:
        usage.ingest(
            s, [usage.NewEvent(f"e{i}", cid, "api_call") for i in range(10)], pricing=PRICING
        )
    with tx() as s:
        billed = usage.bill_batch(s)
    assert (billed.events, billed.debited, billed.unbilled) == (10, 3, 0)  # 10 x 0.3
    assert balance(tx, cid) == 100 + 10 - 3
    with tx() as s:
        assert usage.bill_batch(s).events == 0  # nothing left pending


def test_settlement_is_not_blocked_by_a_client_key_of_its_shape(tx, client) -> None:
    with tx() as s:
        cid = new_customer(s, "s@example.com")
        usage.ingest(
            s, [usage.NewEvent(f"e{i}", cid, "api_call") for i in range(10)], pricing=PRICING
        )
    with tx() as s:
        assert usage.bill_batch(s).unbilled == 3  # an empty wallet: all of it owed
    with tx() as s:  # the settlement's key names its oldest owing event and what it owes
        oldest = s.scalars(
            select(UsageEvent).where(UsageEvent.status == "unbilled").order_by(UsageEvent.seq)
        ).first()
        key = f"usage-settle:{oldest.seq}:{oldest.unbilled_amount}:USD"
    attack(client, cid, key, amount=50)
    with tx() as s:
        [settled] = usage.settle(s)
    assert (settled.debited, settled.still_unbilled) == (3, 0)
    assert balance(tx, cid) == 47
    assert system_entry(tx, cid, key) is not None


def test_a_charge_and_its_reversal_are_not_blocked_by_client_keys_of_their_shape(
    tx, client
) -> None:
    with tx() as s:
        cid = new_customer(s, "c@example.com", credit=5000)
    attack(client, cid, "charge:order_1")
    with tx() as s:
        view = charges.charge(s, cid, 2000, "USD", "order_1")
    assert (view.charge.applied_amount, view.replayed) == (2000, False)
    attack(client, cid, f"reversal:{view.charge.charge_id}:at:0")
    with tx() as s:
        reversal = charges.reverse(s, cid, view.charge.charge_id)
    assert reversal.entry is not None and reversal.entry.amount == 2000
    assert balance(tx, cid) == 5000 + 2
    with tx() as s:
        again = charges.get_charge(s, cid, view.charge.charge_id)
    # The charge's own entries: its debit and its reversal, never the attacker's entries.
    assert [(e.event_type, e.amount) for e in again.entries] == [
        ("payment", 2000),
        ("payment_reversal", 2000),
    ]


def test_a_wallet_refund_is_not_blocked_by_a_client_key_of_its_shape(tx, client) -> None:
    with tx() as s:
        cid = new_customer(s, "r@example.com")
    paid(tx, cid, 700, "pay_9")
    attack(client, cid, "wallet_refund:ref_9", amount=700)
    with tx() as s:
        refund = charges.refund_to_wallet(s, cid, 700, "USD", "pay_9", refund_id="ref_9")
    assert (refund.replayed, refund.entry.event_type, refund.entry.amount) == (False, "refund", 700)
    assert balance(tx, cid) == 1400


def test_a_client_retrying_its_key_gets_its_duplicate_not_the_systems_entry(tx, client) -> None:
    attack(client, ada(tx), "payment:pay_1", amount=5)
    deliver(tx, dodo_payment(payment_id="pay_1", wallet_credit="2000"))
    r = client.post(
        f"/customers/{ADA}/wallets/ledger-entries",
        json={
            "currency": "USD",
            "entry_type": "credit",
            "amount": 5,
            "idempotency_key": "payment:pay_1",
        },
        headers=AUTH,
    )
    assert r.status_code == 409
    assert r.json["entry"]["amount"] == 5 and r.json["entry"]["event_type"] == "merchant_adjustment"


def test_a_used_system_key_in_a_usage_batch_answers_its_wallet_and_bills_the_others(tx) -> None:
    """Even a clash of the system's own keys never stalls the rest of a batch."""
    with tx() as s:
        first = new_customer(s, "a@example.com", credit=100)
        second = new_customer(s, "b@example.com", credit=100)
        usage.ingest(
            s,
            [usage.NewEvent(f"a{i}", first, "api_call") for i in range(10)]
            + [usage.NewEvent(f"b{i}", second, "api_call") for i in range(10)],
            pricing=PRICING,
        )
        seqs = {
            cid: [r.seq for r in s.scalars(select(UsageEvent).where(UsageEvent.customer_id == cid))]
            for cid in (first, second)
        }
    key = ledger.system_key("usage", f"{min(seqs[first])}-{max(seqs[first])}", "USD")
    reason = "usage: 10 event(s) (api_call)"
    with tx() as s:  # as if this very batch had been billed before
        ledger.post(
            s,
            [
                ledger.Leg(
                    first,
                    "USD",
                    3,
                    False,
                    event_type="usage",
                    reason=reason,
                    key=key,
                    on_short=ledger.OnShort.TAKE,
                )
            ],
        )
    with tx() as s:
        billed = usage.bill_batch(s)
    assert billed.events == 20
    assert (balance(tx, first), balance(tx, second)) == (97, 97)
    with tx() as s:
        assert ledger.verify(s).ok
