"""What an API key may do: five scopes, ``admin`` implying every other.

- ``read``: every GET;
- ``customers``: create and change customers (and their low-balance thresholds);
- ``debit``: debits, charges, usage ingest;
- ``credit``: credits, reversals of charges, refunds to wallet credit;
- ``admin``: everything, including ``/admin/*``.

A new key gets ``read`` unless asked for more: a forgotten ``--scope`` then fails loudly (403
naming the scope) instead of handing out the power to move money.
"""

from __future__ import annotations

from collections.abc import Iterable

from worker.errors import ValidationFailed

READ = "read"
CUSTOMERS = "customers"
DEBIT = "debit"
CREDIT = "credit"
ADMIN = "admin"

SCOPES = (READ, CUSTOMERS, DEBIT, CREDIT, ADMIN)
DEFAULT_SCOPES = frozenset({READ})
# What a key could do before scopes existed, short of admin (migration 0011 grants it).
NON_ADMIN = frozenset({READ, CUSTOMERS, DEBIT, CREDIT})


def parse_scopes(names: Iterable[str], field: str = "scope") -> frozenset[str]:
    """``names`` as a set of known scopes (``admin`` absorbs the rest), or ValidationFailed."""
    chosen = frozenset(n.strip().lower() for n in names if n.strip())
    unknown = sorted(chosen - set(SCOPES))
    if unknown:
        raise ValidationFailed(
            field, f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(SCOPES)}"
        )
    return frozenset({ADMIN}) if ADMIN in chosen else chosen


def allows(scopes: frozenset[str], needed: str) -> bool:
    """Whether a key holding ``scopes`` may do what ``needed`` covers."""
    return ADMIN in scopes or needed in scopes


def ordered(scopes: Iterable[str]) -> list[str]:
    """``scopes`` in the documented order (for output)."""
    present = set(scopes)
    return [s for s in SCOPES if s in present]
