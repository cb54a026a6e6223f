"""Stripe ``charge.refunded``: never more reversed than was refunded, whatever the order, the
redeliveries, the event's shape or the concurrency (threads, each its own transaction)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from tests.support.racing import behind, together
from tests.support.webhooks import stripe_event
from worker import inbox, ledger
from worker.inbox import Outcome
from worker.models import LedgerEntry, TopupPayment

PAID = 1500  # the intent's amount, credited 1:1


def receive(tx, payload: dict) -> int:
    with tx() as s:
        stored = inbox.record_event(
            s,
            provider="stripe",
            provider_event_id=payload["id"],
            event_type=payload["type"],
            payload=payload,
        )
    assert stored is not None
    return stored


def apply(session, event_id: int) -> Outcome:
    return inbox.process_event(session, event_id)


@pytest.fixture
def customer(tx) -> str:
    """A customer whose Stripe payment pi_1 credited 1500 USD cents."""
    with tx() as s:
        created, _ = ledger.create_customer(s, email="grace@example.com", name="Grace")
    intent = {
        "id": "pi_1",
        "object": "payment_intent",
        "amount": PAID,
        "amount_received": PAID,
        "currency": "usd",
        "status": "succeeded",
        "metadata": {"wallet_customer_id": created.customer_id, "wallet_credit": str(PAID)},
    }
    with tx() as s:
        assert apply(s, receive(tx, stripe_event("payment_intent.succeeded", intent))).applied
    return created.customer_id


def refunded(amount_refunded: int | None, refunds: list[tuple[str, int, str]] | None = None):
    """A charge.refunded of pi_1's charge; ``refunds`` (id, amount, status) lists them."""
    charge = {
        "id": "ch_1",
        "object": "charge",
        "payment_intent": "pi_1",
        "currency": "usd",
        "amount": PAID,
    }
    if amount_refunded is not None:
        charge["amount_refunded"] = amount_refunded
    if refunds is not None:
        charge["refunds"] = {
            "object": "list",
            "data": [
                {"id": i, "object": "refund", "amount": a, "status": st} for i, a, st in refunds
            ],
        }
    return stripe_event("charge.refunded", charge)


def reversed_total(tx, customer: str) -> int:
    with tx() as s:
        total = s.scalar(
            select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
                LedgerEntry.customer_id == customer, LedgerEntry.event_type == "payment_reversal"
            )
        )
        topup = s.scalar(select(TopupPayment).where(TopupPayment.payment_id == "pi_1"))
        assert topup.reversed_amount == total
        return total


def balance(tx, customer: str) -> int:
    with tx() as s:
        return ledger.get_wallet(s, customer, "USD").balance


def process_all(tx, *payloads: dict) -> None:
    for payload in payloads:
        with tx() as s:
            apply(s, receive(tx, payload))


def test_cumulative_events_out_of_order_reverse_the_largest_once(tx, customer) -> None:
    process_all(tx, refunded(1000), refunded(400), refunded(1000))
    assert reversed_total(tx, customer) == 1000
    assert balance(tx, customer) == 500


def test_a_redelivered_listed_refund_is_reversed_once(tx, customer) -> None:
    event = refunded(500, [("re_1", 500, "succeeded")])
    process_all(tx, event, {**event, "id": event["id"] + "_again"})
    assert reversed_total(tx, customer) == 500


def test_listed_and_cumulative_shapes_of_one_refund_never_add_up(tx, customer) -> None:
    process_all(
        tx,
        refunded(500),  # re_1, as an event without the refund list
        refunded(800, [("re_2", 300, "succeeded"), ("re_1", 500, "succeeded")]),
        refunded(500, [("re_1", 500, "succeeded")]),  # the first one's listed twin, late
    )
    assert reversed_total(tx, customer) == 800
    assert balance(tx, customer) == 700


def test_a_pending_listed_refund_waits_for_its_success(tx, customer) -> None:
    process_all(tx, refunded(600, [("re_1", 600, "pending")]))
    assert reversed_total(tx, customer) == 0
    process_all(tx, refunded(600, [("re_1", 600, "succeeded")]))
    assert reversed_total(tx, customer) == 600


def test_concurrent_events_of_one_charge_reverse_only_the_largest_total(
    settings, tx, customer
) -> None:
    events = [receive(tx, refunded(amount)) for amount in (300, 600, 900, 1200, 900, 600)]
    outcomes = together(settings, len(events), lambda s, i: apply(s, events[i]))
    assert all(isinstance(o, Outcome) for o in outcomes), outcomes
    assert reversed_total(tx, customer) == 1200
    with tx() as s:
        assert ledger.verify(s).ok


@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_second_event_applied_at_once_waits_and_reverses_only_the_rest(
    settings, tx, customer
) -> None:
    """The second transaction reads what was reversed only after the first commits: without
    the payment's lock both would see nothing reversed and reverse 400 + 1000."""
    small, large = receive(tx, refunded(400)), receive(tx, refunded(1000))
    first, second = behind(settings, lambda s: apply(s, small), lambda s: apply(s, large))
    assert (first.status, getattr(second, "status", second)) == ("processed", "processed")
    assert reversed_total(tx, customer) == 1000
    with tx() as s:
        shares = sorted(
            s.scalars(
                select(LedgerEntry.amount).where(LedgerEntry.event_type == "payment_reversal")
            )
        )
    assert shares == [400, 600]


@pytest.mark.parametrize("backend", ["postgresql"])
def test_an_older_event_applied_at_once_after_a_newer_one_reverses_nothing(
    settings, tx, customer
) -> None:
    small, large = receive(tx, refunded(400)), receive(tx, refunded(1000))
    behind(settings, lambda s: apply(s, large), lambda s: apply(s, small))
    assert reversed_total(tx, customer) == 1000
