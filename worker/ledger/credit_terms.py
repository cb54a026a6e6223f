"""A credit's lot terms as callers ask for them: its category and expiry.

The pipeline itself (``legs.prepare``) validates the terms and writes them to the lot; this
module holds what the callers that take them from a person (the API, the CLI) and the ones
that take back a particular credit (a top-up's reversal) share around it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.errors import IdempotencyKeyReused
from worker.ledger.legs import Leg
from worker.models import CreditLot

DEFAULT_CATEGORY = "paid"


def leg_category(category: str | None, *, is_credit: bool) -> str | None:
    """The Leg's ``category`` for a request's: ``paid`` on a credit is the default, so it is
    None, and a retry that names the default has the fingerprint of one that does not. On a
    debit every value is passed on, for ``prepare`` to refuse naming the field."""
    return None if is_credit and category == DEFAULT_CATEGORY else category


def lot_of_entry(session: Session, entry_id: str | None) -> str | None:
    """The id of the lot the credit entry ``entry_id`` created (None when it has none)."""
    if entry_id is None:
        return None
    return session.scalar(select(CreditLot.id).where(CreditLot.entry_id == entry_id))


def with_lot_terms(session: Session, error: IdempotencyKeyReused, leg: Leg) -> IdempotencyKeyReused:
    """``error`` naming ``category`` and ``expires_at`` too when they differ.

    The key check compares the fingerprint and names the entry's own columns that differ;
    a credit's category and expiry live on its lot, so a retry that changed only those was
    refused as "different parameters". Read on the refusal's path only.
    """
    original = error.original
    lot = None
    if original is not None and original.is_credit:
        lot = session.execute(
            select(CreditLot.category, CreditLot.expires_at).where(
                CreditLot.entry_id == original.id
            )
        ).one_or_none()
    before_category, before_expiry = (lot.category, lot.expires_at) if lot else ("paid", None)
    named = [name for name in error.fields if name != "parameters"]
    if (leg.category or DEFAULT_CATEGORY) != before_category and "category" not in named:
        named.append("category")
    if not _same_instant(leg.expires_at, before_expiry) and "expires_at" not in named:
        named.append("expires_at")
    if not named or named == error.fields:
        return error
    return IdempotencyKeyReused(error.details["idempotency_key"], named, original)


def _same_instant(a: datetime | None, b: datetime | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.astimezone(UTC) == b.astimezone(UTC)
