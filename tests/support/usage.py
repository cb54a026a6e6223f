"""Helpers shared by the usage tests: prices, customers, and the exactness invariant."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from benchmarks.support import USAGE_PRICING_TOML
from worker import ledger
from worker.ledger.schemas import USAGE_SCALE
from worker.models import LedgerEntry, UsageEvent, Wallet
from worker.usage.pricing import Price, Pricing

PRICING_TOML = USAGE_PRICING_TOML

PRICING = Pricing(
    prices={
        "api_call": Price("api_call", "USD", Decimal("0.3")),
        "llm_tokens": Price("llm_tokens", "USD", Decimal("0.002"), "tokens"),
    }
)


def new_customer(session: Session, email: str, credit: int = 0) -> str:
    customer, _ = ledger.create_customer(session, email=email, name=email.split("@")[0])
    if credit:
        ledger.post_entry(
            session,
            customer_id=customer.customer_id,
            currency="USD",
            amount=credit,
            is_credit=True,
            reason="top-up",
        )
    return customer.customer_id


def accounting(session: Session, customer_id: str, currency: str = "USD") -> dict[str, Decimal]:
    """What the wallet's usage adds up to, every figure in exact minor units."""
    debited = session.scalar(
        select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
            LedgerEntry.customer_id == customer_id,
            LedgerEntry.currency == currency,
            LedgerEntry.event_type == "usage",
        )
    )
    events = session.execute(
        select(UsageEvent.cost_scaled, UsageEvent.unbilled_amount).where(
            UsageEvent.customer_id == customer_id,
            UsageEvent.currency == currency,
            UsageEvent.status.in_(("processed", "unbilled")),
        )
    ).all()
    wallet = session.get(Wallet, (customer_id, currency), populate_existing=True)
    return {
        "debited": Decimal(debited),
        "unbilled": Decimal(sum(e.unbilled_amount for e in events)),
        "remainder": Decimal(wallet.pending_usage_scaled) / USAGE_SCALE,
        "cost": Decimal(sum(e.cost_scaled for e in events)) / USAGE_SCALE,
        "balance": Decimal(wallet.balance),
    }


def assert_exact(acc: dict[str, Decimal]) -> None:
    assert acc["debited"] + acc["unbilled"] + acc["remainder"] == acc["cost"], acc
    assert 0 <= acc["remainder"] < 1
