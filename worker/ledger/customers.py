"""Customers: one per email (case-insensitively), each with one wallet per configured currency."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from worker.errors import CustomerNotFound, ValidationFailed
from worker.infra.db import settings_of
from worker.infra.sql import insert_ignore
from worker.ledger.validation import validate_customer_id, validate_page
from worker.models import Customer, Wallet, new_id, utcnow


def create_customer(
    session: Session,
    *,
    email: str,
    name: str,
    phone_number: str | None = None,
    metadata: dict[str, Any] | None = None,
    customer_id: str | None = None,
    actor: str = "system",
) -> tuple[Customer, bool]:
    """Create a customer and one zero-balance wallet per configured currency.

    Returns ``(customer, created)``. An email already on file (case-insensitively) returns the
    existing customer with ``created=False``: one customer per email, even under a race.
    """
    if customer_id is not None:
        validate_customer_id(customer_id)
    email = email.strip()
    normalized = email.lower()
    existing = session.scalar(select(Customer).where(Customer.email_normalized == normalized))
    if existing is not None:
        return existing, False
    customer = Customer(
        customer_id=customer_id or new_id("cus"),
        business_id=settings_of(session).business_id,
        email=email,
        email_normalized=normalized,
        name=name,
        phone_number=phone_number,
        metadata_=metadata or {},
        created_at=utcnow(),
        created_by=actor,
    )
    try:
        # A concurrent create with the same email loses on the unique index; the savepoint
        # keeps the caller's transaction usable so we can return the winner instead.
        with session.begin_nested():
            session.add(customer)
            session.flush()
    except IntegrityError:
        winner = session.scalar(select(Customer).where(Customer.email_normalized == normalized))
        if winner is None:
            raise
        return winner, False
    ensure_wallets(session, customer.customer_id)
    return customer, True


def get_customer(session: Session, customer_id: str) -> Customer:
    customer = session.get(Customer, customer_id)
    if customer is None:
        raise CustomerNotFound(customer_id)
    return customer


def find_customer_by_email(session: Session, email: str) -> Customer | None:
    return session.scalar(
        select(Customer).where(Customer.email_normalized == email.strip().lower())
    )


def list_customers(
    session: Session,
    *,
    email: str | None = None,
    name: str | None = None,
    created_at_gte: datetime | None = None,
    created_at_lte: datetime | None = None,
    page_number: int = 0,
    page_size: int = 10,
) -> list[Customer]:
    """Customers, newest first; ``email`` matches exactly, ``name`` as a substring (both
    case-insensitively), the ``created_at`` bounds are inclusive."""
    page_number, page_size = validate_page(page_number, page_size)
    query = select(Customer).order_by(Customer.created_at.desc(), Customer.customer_id)
    if email:
        query = query.where(Customer.email_normalized == email.strip().lower())
    if name:
        pattern = "%" + re.sub(r"([\\%_])", r"\\\1", name) + "%"
        query = query.where(Customer.name.ilike(pattern, escape="\\"))
    if created_at_gte is not None:
        query = query.where(Customer.created_at >= created_at_gte)
    if created_at_lte is not None:
        query = query.where(Customer.created_at <= created_at_lte)
    return list(session.scalars(query.offset(page_number * page_size).limit(page_size)))


_UPDATABLE = {"name", "phone_number", "metadata", "low_balance_thresholds"}


def update_customer(
    session: Session, customer_id: str, *, actor: str = "system", **changes: Any
) -> Customer:
    """Change a customer's name, phone number, metadata or threshold overrides; ``actor``
    is recorded as the last to change it."""
    unknown = set(changes) - _UPDATABLE
    if unknown:
        raise ValidationFailed(sorted(unknown)[0], "cannot be changed")
    customer = get_customer(session, customer_id)
    for key, value in changes.items():
        setattr(customer, "metadata_" if key == "metadata" else key, value)
    customer.updated_by = actor
    customer.updated_at = utcnow()
    session.flush()
    return customer


def ensure_wallets(session: Session, customer_id: str) -> None:
    """Create any missing wallet for the configured currencies (balance 0)."""
    now = utcnow()
    rows = [
        {
            "customer_id": customer_id,
            "currency": currency,
            "balance": 0,
            "created_at": now,
            "updated_at": now,
        }
        for currency in settings_of(session).wallet_currencies
    ]
    session.execute(insert_ignore(session, Wallet.__table__, ["customer_id", "currency"]), rows)
