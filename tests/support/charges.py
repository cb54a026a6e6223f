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
