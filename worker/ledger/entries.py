"""Reading the ledger: a customer's entries, newest first."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.ledger.customers import get_customer
from worker.ledger.validation import validate_currency, validate_page
from worker.models import LedgerEntry


def list_entries(
    session: Session,
    customer_id: str,
    *,
    currency: str | None = None,
    page_number: int = 0,
    page_size: int = 10,
) -> list[LedgerEntry]:
    """A customer's entries, newest first."""
    page_number, page_size = validate_page(page_number, page_size)
    get_customer(session, customer_id)
    query = select(LedgerEntry).where(LedgerEntry.customer_id == customer_id)
    if currency is not None:
        query = query.where(LedgerEntry.currency == validate_currency(session, currency))
    query = query.order_by(LedgerEntry.seq.desc())
    return list(session.scalars(query.offset(page_number * page_size).limit(page_size)))
