"""wallet.credits_expiring (once per lot, before it expires) and wallet.credits_expired (with
its expiration entry), signed and delivered to a real local receiver; the low-balance check
runs after an expiry like after any debit."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select

from tests.support.receiver import Receiver, start_receiver
from worker import ledger, notify
from worker.config import Settings
from worker.infra.db import transaction
from worker.ledger import expiry
from worker.models import LedgerEntry, OutboxMessage, utcnow
from worker.notify import commit_hooks

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    rec, server = start_receiver()
    yield rec
    server.shutdown()


@pytest.fixture
def watched(settings: Settings, receiver: Receiver) -> Settings:
    commit_hooks.install()
    receiver.secrets["/expiry"] = SECRET
    return settings.with_overrides(
        low_balance_thresholds="USD=100",
        notify_webhook_url=receiver.url + "/expiry",
        notify_webhook_secret=SECRET,
        credit_expiry_notice_days=7,
    )


def _deliver_all(s: Settings) -> None:
    with transaction(s) as session:
        ids = [m.id for m in session.scalars(select(OutboxMessage))]
    for message_id in ids:
        notify.deliver(s, message_id)


def _of(receiver: Receiver, event_type: str, customer_id: str) -> list:  # type: ignore[type-arg]
    """This customer's deliveries of ``event_type`` (the receiver serves the whole module)."""
    deadline = time.monotonic() + 10
    while True:
        found = [
            d
            for d in receiver.of("/expiry", event_type)
            if d.payload["data"]["customer_id"] == customer_id
        ]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_expiring_notice_once_per_lot_then_expired_with_its_entry(
    watched: Settings, receiver: Receiver
) -> None:
    with transaction(watched) as s:
        cid = ledger.create_customer(s, email="exp@example.com", name="Exp")[0].customer_id
        moment = utcnow() + timedelta(seconds=0.4)
        ledger.post(
            s,
            [
                ledger.Leg(cid, "USD", 150, is_credit=True),
                ledger.Leg(
                    cid, "USD", 500, is_credit=True, expires_at=moment, category="promotional"
                ),
                # Outside the 7-day window: no notice yet.
                ledger.Leg(
                    cid, "USD", 70, is_credit=True, expires_at=utcnow() + timedelta(days=30)
                ),
            ],
        )
    first = expiry.expire_credits(watched)
    second = expiry.expire_credits(watched)  # an overlapping or later run: no second notice
    assert (first.noticed, second.noticed, first.expired_lots) == (1, 0, 0)
    while utcnow() <= moment:
        time.sleep(0.02)
    assert expiry.expire_credits(watched).expired_lots == 1
    assert expiry.expire_credits(watched).expired_lots == 0
    _deliver_all(watched)
    expiring = _of(receiver, "wallet.credits_expiring", cid)
    expired = _of(receiver, "wallet.credits_expired", cid)
    data = expiring[0].payload["data"]
    assert (data["customer_id"], data["remaining"], data["category"]) == (cid, 500, "promotional")
    done = expired[0].payload["data"]
    assert (done["lot_id"], done["expired"], done["balance"]) == (data["lot_id"], 500, 220)
    with transaction(watched) as s:
        entry = s.scalars(
            select(LedgerEntry).where(LedgerEntry.id == done["ledger_entry_id"])
        ).one()
        assert (entry.event_type, entry.amount, entry.actor) == ("expiration", 500, "system")
    time.sleep(0.2)
    assert len(_of(receiver, "wallet.credits_expiring", cid)) == 1
    assert len(_of(receiver, "wallet.credits_expired", cid)) == 1


def test_an_expiry_that_crosses_the_threshold_sends_balance_low(
    watched: Settings, receiver: Receiver
) -> None:
    with transaction(watched) as s:
        cid = ledger.create_customer(s, email="low-exp@example.com", name="Low")[0].customer_id
        moment = utcnow() + timedelta(seconds=0.3)
        ledger.post(
            s,
            [
                ledger.Leg(cid, "USD", 50, is_credit=True),
                ledger.Leg(cid, "USD", 400, is_credit=True, expires_at=moment),
            ],
        )
    while utcnow() <= moment:
        time.sleep(0.02)
    expiry.expire_credits(watched)
    with transaction(watched) as s:
        wallet = ledger.get_wallet(s, cid, "USD")
        assert (wallet.balance, wallet.low_state) == (50, "low")
    _deliver_all(watched)
    assert len(_of(receiver, "wallet.balance_low", cid)) == 1
