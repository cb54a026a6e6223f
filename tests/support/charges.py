"""Charge-test helpers: a funded customer, its USD balance, a charge, the verify report."""

from __future__ import annotations

from sqlalchemy import func, select

from worker import charges, ledger


def make_customer(tx, balance: int = 0, email: str = "ada@example.com") -> str:
    with tx() as s:
        customer, _ = ledger.create_customer(s, email=email, name="Ada")
        if balance:
            ledger.post_entry(
                s,
                customer_id=customer.customer_id,
                currency="USD",
                amount=balance,
                is_credit=True,
            )
        return customer.customer_id


def usd(tx, customer_id: str) -> int:
    with tx() as s:
        return ledger.get_wallet(s, customer_id, "USD").balance


def assert_verified(tx) -> None:
    with tx() as s:
        report = ledger.verify(s)
    assert report.problems == []


def count(tx, model, **where) -> int:
    with tx() as s:
        query = select(func.count()).select_from(model)
        for name, value in where.items():
            query = query.where(getattr(model, name) == value)
        return s.scalar(query)


def charged(tx, balance: int, amount: int, order_id: str = "order_1") -> tuple[str, str]:
    cid = make_customer(tx, balance)
    with tx() as s:
        return cid, charges.charge(s, cid, amount, "USD", order_id).charge.charge_id


def paid(tx, customer_id: str, amount: int, payment_id: str = "pay_1", currency: str = "USD"):
    """A Dodo payment of ``customer_id`` stored in the inbox (not applied): a payment the
    service knows, so refunds of it to wallet are bounded by ``amount``."""
    from tests.support.webhooks import dodo_payment
    from worker import inbox

    payload = dodo_payment(
        payment_id=payment_id,
        customer_id=customer_id,
        total=amount,
        currency=currency,
        wallet_credit=None,
    )
    with tx() as s:
        inbox.record_event(
            s,
            provider="dodo",
            provider_event_id=f"msg_{payment_id}",
            event_type="payment.succeeded",
            payload=payload,
        )
    return payment_id
