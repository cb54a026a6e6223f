"""The inbox core and payment handlers, on SQLite and PostgreSQL (no broker involved)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tests.support.webhooks import dodo_payment, dodo_refund, stripe_event
from worker import inbox, ledger
from worker.config import ConfigError, Settings, parse_topup_products
from worker.models import InboxEvent, LedgerEntry

ADA = "cus_8VbC6JDZzPEqfBPUdpj0K"


def receive(tx, payload, provider="dodo", event_id=None) -> int:
    """Store an event as the receiver would; returns its inbox id."""
    event_id = event_id or payload.get("id") or f"msg_{id(payload)}_{payload['type']}"
    with tx() as s:
        stored = inbox.record_event(
            s,
            provider=provider,
            provider_event_id=event_id,
            event_type=payload["type"],
            payload=payload,
        )
    assert stored is not None
    return stored


def process(tx, event_id: int) -> inbox.Outcome:
    with tx() as s:
        return inbox.process_event(s, event_id)


def event(tx, event_id: int) -> InboxEvent:
    with tx() as s:
        return s.get(InboxEvent, event_id)


def balance(tx, customer_id: str = ADA, currency: str = "USD") -> int:
    with tx() as s:
        return ledger.get_wallet(s, customer_id, currency).balance


def entries(tx, customer_id: str = ADA) -> list[LedgerEntry]:
    with tx() as s:
        return list(
            s.scalars(
                select(LedgerEntry)
                .where(LedgerEntry.customer_id == customer_id)
                .order_by(LedgerEntry.seq)
            )
        )


def test_payment_creates_customer_with_dodo_id_and_credits(tx) -> None:
    payload = dodo_payment(payment_id="pay_1", wallet_credit="2000")
    outcome = process(tx, receive(tx, payload))
    assert outcome.status == "processed"
    assert balance(tx) == 2000
    [entry] = entries(tx)
    assert (entry.event_type, entry.reference_object_id, entry.idempotency_key) == (
        "payment",
        "pay_1",
        "payment:pay_1",
    )


def test_payment_redelivered_under_new_webhook_id_credits_once(tx) -> None:
    payload = dodo_payment(payment_id="pay_1")
    process(tx, receive(tx, payload, event_id="msg_a"))
    process(tx, receive(tx, payload, event_id="msg_b"))
    assert balance(tx) == 2000
    assert len(entries(tx)) == 1


def test_processing_twice_applies_once(tx) -> None:
    event_id = receive(tx, dodo_payment())
    assert process(tx, event_id).applied
    assert process(tx, event_id).applied is False
    assert balance(tx) == 2000


def test_payment_matches_existing_customer_by_email(tx) -> None:
    with tx() as s:
        mine, _ = ledger.create_customer(s, email="Ada@Example.com", name="Ada")
    process(tx, receive(tx, dodo_payment(customer_id="cus_unknown_to_us")))
    assert balance(tx, mine.customer_id) == 2000


def test_topup_products_credit_times_quantity(settings, tx) -> None:
    from worker.infra.db import transaction

    configured = settings.with_overrides(topup_products="prod_credits_100=10000:USD")
    payload = dodo_payment(
        wallet_credit=None,
        product_cart=[
            {"product_id": "prod_credits_100", "quantity": 3},
            {"product_id": "prod_sticker", "quantity": 1},
        ],
    )
    event_id = receive(tx, payload)
    with transaction(configured) as s:
        assert inbox.process_event(s, event_id).status == "processed"
    assert balance(tx) == 30000


def test_wallet_currency_from_metadata(tx) -> None:
    payload = dodo_payment()
    payload["data"]["metadata"]["wallet_currency"] = "inr"
    process(tx, receive(tx, payload))
    assert (balance(tx, currency="USD"), balance(tx, currency="INR")) == (0, 2000)


def test_payment_that_is_not_a_topup_is_ignored_and_its_refund_too(tx) -> None:
    payment = dodo_payment(payment_id="pay_plain", wallet_credit=None)
    assert process(tx, receive(tx, payment)).status == "ignored"
    assert process(tx, receive(tx, dodo_refund("pay_plain", 500))).status == "ignored"


def test_unknown_event_type_is_ignored(tx) -> None:
    payload = {"type": "subscription.active", "data": {}}
    assert process(tx, receive(tx, payload)).status == "ignored"


@pytest.mark.parametrize("credit", ["12.5", "-5", "0", "abc", 1.5, True, "١٢"])
def test_malformed_wallet_credit_fails_visibly_then_replays(tx, credit) -> None:
    event_id = receive(tx, dodo_payment(payment_id="pay_bad", wallet_credit=credit))
    assert process(tx, event_id).status == "failed"
    stored = event(tx, event_id)
    assert "data.metadata.wallet_credit" in stored.error
    with tx() as s:  # the failed handler's writes were rolled back with its savepoint
        assert ledger.find_customer_by_email(s, "ada@example.com") is None


def test_replay_of_fixed_failed_event_applies_once(tx) -> None:
    event_id = receive(tx, {"type": "payment.succeeded", "data": "oops"})
    assert process(tx, event_id).status == "failed"
    with tx() as s:
        row = s.get(InboxEvent, event_id)
        row.payload = dodo_payment(payment_id="pay_fixed")  # an operator-corrected payload
    with tx() as s:
        inbox.reset_for_replay(s, event_id)
    assert process(tx, event_id).status == "processed"
    with tx() as s, pytest.raises(inbox.EventNotReplayable):
        inbox.reset_for_replay(s, event_id)  # processed events are never re-run
    assert balance(tx) == 2000


def test_refund_before_payment_waits_then_applies(tx) -> None:
    refund_event = receive(tx, dodo_refund("pay_late", 500, refund_id="ref_1"))
    waiting = process(tx, refund_event)
    assert (waiting.status, waiting.waiting is not None) == ("pending", True)
    assert event(tx, refund_event).status == "pending"
    process(tx, receive(tx, dodo_payment(payment_id="pay_late")))
    assert process(tx, refund_event).status == "processed"
    assert balance(tx) == 1500
    reversal = entries(tx)[-1]
    assert (reversal.event_type, reversal.reference_object_id, reversal.idempotency_key) == (
        "payment_reversal",
        "ref_1",
        "refund:ref_1",
    )


def test_partial_refunds_are_capped_at_the_credit(tx) -> None:
    process(tx, receive(tx, dodo_payment(payment_id="pay_1", total=2000, wallet_credit="2000")))
    with tx() as s:  # other money in the wallet must not be reversed
        ledger.post_entry(s, customer_id=ADA, currency="USD", amount=5000, is_credit=True)
    for amount in (1500, 1500, 1500):
        process(tx, receive(tx, dodo_refund("pay_1", amount)))
    assert balance(tx) == 5000
    assert sum(e.amount for e in entries(tx) if e.event_type == "payment_reversal") == 2000


def test_refund_share_is_proportional_to_the_payment(tx) -> None:
    # Paid 1000 cents for 2500 credits: refunding 400 cents reverses 1000 credits.
    process(tx, receive(tx, dodo_payment(payment_id="pay_p", total=1000, wallet_credit=2500)))
    result_id = receive(tx, dodo_refund("pay_p", 400))
    process(tx, result_id)
    assert balance(tx) == 1500
    assert event(tx, result_id).result["share"] == 1000


def test_refund_of_spent_credit_debits_what_is_there_and_records_shortfall(tx) -> None:
    process(tx, receive(tx, dodo_payment(payment_id="pay_s")))
    with tx() as s:
        ledger.post_entry(s, customer_id=ADA, currency="USD", amount=1800, is_credit=False)
    refund_id = receive(tx, dodo_refund("pay_s", 2000))
    assert process(tx, refund_id).status == "processed"
    assert balance(tx) == 0
    result = event(tx, refund_id).result
    assert (result["share"], result["debited"], result["shortfall"]) == (2000, 200, 1800)


def test_the_same_refund_redelivered_reverses_once(tx) -> None:
    process(tx, receive(tx, dodo_payment(payment_id="pay_r")))
    refund = dodo_refund("pay_r", 500, refund_id="ref_same")
    process(tx, receive(tx, refund, event_id="msg_1"))
    process(tx, receive(tx, refund, event_id="msg_2"))
    assert balance(tx) == 1500


# -- Stripe ------------------------------------------------------------------------------------


def _stripe_customer(tx) -> str:
    with tx() as s:
        customer, _ = ledger.create_customer(s, email="grace@example.com", name="Grace")
        return customer.customer_id


def _intent(customer_id: str, pi: str = "pi_1", **extra) -> dict:
    return {
        "id": pi,
        "object": "payment_intent",
        "amount": 1500,
        "amount_received": 1500,
        "currency": "usd",
        "status": "succeeded",
        "metadata": {"wallet_customer_id": customer_id, "wallet_credit": "1500", **extra},
    }


def test_stripe_payment_intent_and_checkout_session_credit_once(tx) -> None:
    customer = _stripe_customer(tx)
    intent = stripe_event("payment_intent.succeeded", _intent(customer))
    checkout = stripe_event(
        "checkout.session.completed",
        {
            "id": "cs_1",
            "object": "checkout.session",
            "payment_intent": "pi_1",
            "payment_status": "paid",
            "amount_total": 1500,
            "currency": "usd",
            "metadata": {"customer_id": customer, "wallet_credit": "1500"},
        },
    )
    assert process(tx, receive(tx, checkout, provider="stripe")).status == "processed"
    assert process(tx, receive(tx, intent, provider="stripe")).status == "processed"
    assert balance(tx, customer) == 1500
    [entry] = entries(tx, customer)
    assert entry.idempotency_key == "payment:pi_1"


def test_stripe_intent_without_metadata_then_checkout_session_credits(tx) -> None:
    customer = _stripe_customer(tx)
    bare_intent = {**_intent(customer), "metadata": {}}
    checkout = stripe_event(
        "checkout.session.completed",
        {
            "id": "cs_3",
            "object": "checkout.session",
            "payment_intent": "pi_1",
            "payment_status": "paid",
            "amount_total": 1500,
            "currency": "usd",
            "metadata": {"wallet_customer_id": customer, "wallet_credit": "1500"},
        },
    )
    intent_event = receive(tx, stripe_event("payment_intent.succeeded", bare_intent), "stripe")
    assert process(tx, intent_event).status == "ignored"
    assert process(tx, receive(tx, checkout, provider="stripe")).status == "processed"
    assert balance(tx, customer) == 1500


def test_stripe_unpaid_checkout_is_ignored(tx) -> None:
    checkout = stripe_event(
        "checkout.session.completed",
        {"id": "cs_2", "object": "checkout.session", "payment_status": "unpaid"},
    )
    assert process(tx, receive(tx, checkout, provider="stripe")).status == "ignored"


def test_stripe_unknown_customer_fails_visibly(tx) -> None:
    intent = stripe_event("payment_intent.succeeded", _intent("cus_nobody"))
    event_id = receive(tx, intent, provider="stripe")
    assert process(tx, event_id).status == "failed"
    assert "cus_nobody" in event(tx, event_id).error


def test_stripe_charge_refunded_reverses_each_refund_once(tx) -> None:
    customer = _stripe_customer(tx)
    process(tx, receive(tx, stripe_event("payment_intent.succeeded", _intent(customer)), "stripe"))

    def charge(refunds: list[dict]) -> dict:
        return stripe_event(
            "charge.refunded",
            {
                "id": "ch_1",
                "object": "charge",
                "payment_intent": "pi_1",
                "currency": "usd",
                "amount": 1500,
                "amount_refunded": sum(r["amount"] for r in refunds),
                "refunds": {"object": "list", "data": refunds},
            },
        )

    first = [{"id": "re_1", "object": "refund", "amount": 500, "status": "succeeded"}]
    second = [*first, {"id": "re_2", "object": "refund", "amount": 300, "status": "succeeded"}]
    process(tx, receive(tx, charge(first), "stripe"))
    process(tx, receive(tx, charge(second), "stripe"))
    assert balance(tx, customer) == 700


def test_stripe_charge_refunded_without_refund_list_uses_cumulative_amount(tx) -> None:
    customer = _stripe_customer(tx)
    process(tx, receive(tx, stripe_event("payment_intent.succeeded", _intent(customer)), "stripe"))
    for refunded in (400, 1000):
        charge = stripe_event(
            "charge.refunded",
            {
                "id": "ch_1",
                "object": "charge",
                "payment_intent": "pi_1",
                "currency": "usd",
                "amount": 1500,
                "amount_refunded": refunded,
            },
        )
        process(tx, receive(tx, charge, "stripe"))
    assert balance(tx, customer) == 500


# -- sweeper, CLI, config -------------------------------------------------------------------


def test_stale_pending_ids_skip_fresh_and_finished_rows(tx) -> None:
    fresh = receive(tx, dodo_payment())
    done = receive(tx, dodo_payment())
    process(tx, done)
    with tx() as s:
        assert inbox.stale_pending_ids(s, 60) == []
        assert inbox.stale_pending_ids(s, 0) == [fresh]


def test_cli_events_list_show_replay(cli, tx) -> None:
    event_id = receive(tx, {"type": "payment.succeeded", "data": "oops"})
    process(tx, event_id)
    listed = cli("events", "list", "--status", "failed")
    assert listed.code == 0 and f"{event_id}" in listed.out
    shown = cli("events", "show", str(event_id))
    assert '"status": "failed"' in shown.out
    replayed = cli("events", "replay", str(event_id))
    assert replayed.code == 0 and "failed" in replayed.out
    missing = cli("events", "show", "999999")
    assert missing.code != 0


@pytest.mark.parametrize(
    "raw",
    ["prod_x", "prod_x=100", "prod_x=abc:USD", "prod_x=100:XXX", "prod_x=0:USD", "=1:USD"],
)
def test_malformed_topup_products_fail_loudly(raw) -> None:
    with pytest.raises(ConfigError, match="TOPUP_PRODUCTS"):
        Settings.from_env({"TOPUP_PRODUCTS": raw})


def test_topup_products_parse() -> None:
    assert parse_topup_products(" prod_a=10000:usd, prod_b=5:INR ") == {
        "prod_a": (10000, "USD", None),
        "prod_b": (5, "INR", None),
    }


# -- batches (what the worker runs after the receiver's kick) ----------------------------------


def process_pending(tx, limit: int = 100) -> inbox.Batch:
    with tx() as s:
        return inbox.process_pending(s, limit)


def test_a_batch_applies_pending_events_oldest_first_in_one_transaction(tx) -> None:
    ids = [
        receive(tx, dodo_payment(payment_id=f"pay_{n}", wallet_credit="100"), event_id=f"m{n}")
        for n in range(5)
    ]
    batch = process_pending(tx, limit=3)
    assert [o.event_id for o in batch.outcomes] == ids[:3]
    assert balance(tx) == 300
    assert [o.event_id for o in process_pending(tx).outcomes] == ids[3:]
    assert process_pending(tx).outcomes == []  # nothing left; a redelivered task is a no-op
    assert balance(tx) == 500
    assert {event(tx, i).status for i in ids} == {"processed"}


def test_a_batch_leaves_a_refund_before_its_payment_waiting_and_skips_it(tx) -> None:
    refund = receive(tx, dodo_refund("pay_late", 500), event_id="m_refund")
    payment = receive(tx, dodo_payment(payment_id="pay_other"), event_id="m_pay")
    batch = process_pending(tx)
    assert batch.waiting == [refund]
    assert event(tx, payment).status == "processed"
    assert event(tx, refund).error.startswith("waiting:")
    # Later batches leave it to its own retries (process_event) and the sweeper.
    assert process_pending(tx).outcomes == []
    receive(tx, dodo_payment(payment_id="pay_late"), event_id="m_late")
    process_pending(tx)
    assert process(tx, refund).status == "processed"
    assert balance(tx) == 2000 + 2000 - 500


def test_a_permanent_error_fails_its_event_and_the_batch_commits(tx) -> None:
    bad = receive(tx, dodo_payment(payment_id="pay_bad", wallet_credit="-5"), event_id="m_bad")
    good = receive(tx, dodo_payment(payment_id="pay_good"), event_id="m_good")
    process_pending(tx)
    assert event(tx, bad).status == "failed"
    assert event(tx, good).status == "processed"
    assert balance(tx) == 2000


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_batch_skips_events_another_transaction_holds(settings, tx) -> None:
    from worker.infra.db import transaction

    held = receive(tx, dodo_payment(payment_id="pay_held"), event_id="m_held")
    other = {"customer_id": "cus_other", "email": "other@example.com"}
    free = receive(tx, dodo_payment(payment_id="pay_free", **other), event_id="m_free")
    with transaction(settings) as holder:
        assert inbox.process_event(holder, held).applied  # locked, not committed yet
        batch = process_pending(tx)  # does not wait for the lock
        assert [o.event_id for o in batch.outcomes] == [free]
    assert event(tx, held).status == "processed"
    assert balance(tx) == balance(tx, "cus_other") == 2000


def test_a_failing_event_after_good_ones_reruns_the_batch_without_doubling_them(tx) -> None:
    good = [
        receive(tx, dodo_payment(payment_id=f"pay_ok{n}", wallet_credit="700"), event_id=f"g{n}")
        for n in range(3)
    ]
    bad = receive(tx, dodo_payment(payment_id="pay_bad", wallet_credit="-5"), event_id="m_bad")
    batch = process_pending(tx)
    assert [o.status for o in batch.outcomes] == ["processed"] * 3 + ["failed"]
    assert balance(tx) == 2100
    assert len(entries(tx)) == 3
    assert [event(tx, i).attempts for i in [*good, bad]] == [1, 1, 1, 1]


def test_a_rolled_back_savepoint_forgets_what_it_posted(session) -> None:
    from worker.notify import commit_hooks

    customer, _ = ledger.create_customer(session, email="sp@example.com", name="Sp")
    with pytest.raises(RuntimeError), commit_hooks.savepoint(session):
        ledger.post_entry(
            session, customer_id=customer.customer_id, currency="USD", amount=5, is_credit=True
        )
        raise RuntimeError("the handler failed after posting")
    assert not session.info.get(commit_hooks.CHANGED_KEY)
    assert not session.info.get(commit_hooks.ENTRIES_KEY)


def test_one_payment_delivered_twice_in_one_batch_credits_once(tx) -> None:
    payload = dodo_payment(payment_id="pay_twice")
    first = receive(tx, payload, event_id="m_first")
    second = receive(tx, payload, event_id="m_second")
    batch = process_pending(tx)
    assert [o.status for o in batch.outcomes] == ["processed", "processed"]
    assert event(tx, second).result["duplicate"] is True
    assert event(tx, first).result["credited"] == 2000
    assert balance(tx) == 2000 and len(entries(tx)) == 1


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)  # SQLite: one writer
def test_a_payment_written_by_another_transaction_after_the_prefetch_credits_once(
    settings, tx
) -> None:
    """The batch's hint says the payment is new; a concurrent single-event task then applies
    another delivery of it. The batch must notice (unique constraint) and not credit twice."""
    from worker.infra.db import transaction

    payload = dodo_payment(payment_id="pay_race")
    mine = receive(tx, payload, event_id="m_batch")
    theirs = receive(tx, payload, event_id="m_single")

    def race(_session, _events) -> None:  # type: ignore[no-untyped-def]
        with transaction(settings) as other:
            assert inbox.process_event(other, theirs).status == "processed"

    inbox.PREFETCHERS.append(race)
    try:
        with transaction(settings) as s:
            # Only our event: the other is held by the racing transaction's own task.
            batch = inbox.process_pending(s, limit=1)
    finally:
        inbox.PREFETCHERS.remove(race)
    assert [o.event_id for o in batch.outcomes] == [mine]
    assert event(tx, mine).status == "processed"
    assert event(tx, mine).result["duplicate"] is True
    assert balance(tx) == 2000 and len(entries(tx)) == 1


def test_a_batch_of_known_customers_reads_each_only_once(settings, tx) -> None:
    from sqlalchemy import event as sa_event

    from worker.infra.db import get_engine

    process(tx, receive(tx, dodo_payment(payment_id="pay_first"), event_id="m0"))
    for n in range(5):
        receive(tx, dodo_payment(payment_id=f"pay_n{n}", wallet_credit="10"), event_id=f"n{n}")
    statements: list[str] = []

    def record(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    engine = get_engine(settings)
    sa_event.listen(engine, "before_cursor_execute", record)
    try:
        process_pending(tx)
    finally:
        sa_event.remove(engine, "before_cursor_execute", record)
    assert balance(tx) == 2050
    lookups = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    by_customer = [s for s in lookups if "FROM customers" in s]
    by_payment = [s for s in lookups if "FROM topup_payments" in s]
    assert len(by_customer) == 1 and len(by_payment) == 1, lookups
