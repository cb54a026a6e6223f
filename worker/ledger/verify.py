"""Checking every wallet against its ledger: sums, the before/after chain, no negatives, the
lots holding the balance and every debit's lots paying for it."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from worker.models import LedgerEntry, Wallet


@dataclass
class VerifyReport:
    wallets: int
    entries: int
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


_DRIFT_SQL = text("""
    SELECT w.customer_id, w.currency, w.balance, COALESCE(s.net, 0) AS net
    FROM wallets w
    LEFT JOIN (
        SELECT customer_id, currency,
               SUM(CASE WHEN is_credit THEN amount ELSE -amount END) AS net
        FROM ledger_entries GROUP BY customer_id, currency
    ) s ON s.customer_id = w.customer_id AND s.currency = w.currency
    WHERE w.balance <> COALESCE(s.net, 0)
    LIMIT :limit
""")

# Each entry must start where the previous one on the same wallet ended (the first from 0).
_CHAIN_SQL = text("""
    SELECT id, customer_id, currency, before_balance, previous FROM (
        SELECT id, customer_id, currency, before_balance,
               LAG(after_balance, 1, 0) OVER (
                   PARTITION BY customer_id, currency ORDER BY seq
               ) AS previous
        FROM ledger_entries
    ) chained
    WHERE before_balance <> previous
    LIMIT :limit
""")


# A wallet's lots must hold its balance, to the unit.
_LOTS_SQL = text("""
    SELECT w.customer_id, w.currency, w.balance, COALESCE(l.remaining, 0) AS remaining
    FROM wallets w
    LEFT JOIN (
        SELECT customer_id, currency, SUM(remaining) AS remaining
        FROM credit_lots GROUP BY customer_id, currency
    ) l ON l.customer_id = w.customer_id AND l.currency = w.currency
    WHERE w.balance <> COALESCE(l.remaining, 0)
    LIMIT :limit
""")

# Every debit posted since lots were introduced says which lots paid for it, to the unit.
# The sum is a correlated lookup on lot_consumptions' primary key (entry_id, lot_id), not a
# join against an aggregate of the whole table: with stale statistics after a bulk load,
# PostgreSQL planned that join as a nested loop over every group for every debit (over 15
# minutes for 34,000 debits; this form takes under a second).
_CONSUMED_SQL = text("""
    SELECT id, customer_id, currency, amount, consumed FROM (
        SELECT e.id, e.customer_id, e.currency, e.amount,
               (SELECT COALESCE(SUM(c.amount), 0) FROM lot_consumptions c
                WHERE c.entry_id = e.id) AS consumed
        FROM ledger_entries e
        WHERE NOT e.is_credit
          AND e.seq >= COALESCE((SELECT value FROM ledger_markers WHERE name = 'lots_from_seq'), 0)
    ) d
    WHERE amount <> consumed
    LIMIT :limit
""")


# Each wallet's held total is the sum of its active holds, to the unit.
_HELD_SQL = text("""
    SELECT w.customer_id, w.currency, w.held, COALESCE(h.active, 0) AS active
    FROM wallets w
    LEFT JOIN (
        SELECT customer_id, currency, SUM(amount) AS active
        FROM wallet_holds WHERE status = 'active' GROUP BY customer_id, currency
    ) h ON h.customer_id = w.customer_id AND h.currency = w.currency
    WHERE w.held <> COALESCE(h.active, 0)
    LIMIT :limit
""")

# A hold captures at most its amount, and a captured hold's entry debits what it captured.
_CAPTURED_SQL = text("""
    SELECT h.customer_id, h.hold_id, h.amount, h.captured_amount, e.amount AS debited
    FROM wallet_holds h
    LEFT JOIN ledger_entries e ON e.id = h.entry_id AND e.customer_id = h.customer_id
    WHERE h.captured_amount > h.amount OR h.captured_amount < 0
       OR (h.status = 'captured' AND h.captured_amount <> COALESCE(e.amount, 0))
       OR (h.status <> 'captured' AND h.captured_amount <> 0)
    LIMIT :limit
""")


def verify(session: Session, limit: int = 100) -> VerifyReport:
    """Check every wallet against its ledger: sums, the before/after chain, no negatives."""
    problems: list[str] = []
    wallets = session.scalar(select(func.count()).select_from(Wallet)) or 0
    entries = session.scalar(select(func.count()).select_from(LedgerEntry)) or 0
    drift = session.execute(_DRIFT_SQL, {"limit": limit})
    problems += [
        f"wallet {r.customer_id}/{r.currency}: balance {r.balance} but ledger sums to {r.net}"
        for r in drift
    ]
    broken = session.execute(_CHAIN_SQL, {"limit": limit})
    problems += [
        f"entry {r.id} ({r.customer_id}/{r.currency}): before_balance {r.before_balance} "
        f"but the previous entry left {r.previous}"
        for r in broken
    ]
    drifting = session.execute(_LOTS_SQL, {"limit": limit})
    problems += [
        f"wallet {r.customer_id}/{r.currency}: balance {r.balance} but its credit lots hold "
        f"{r.remaining}"
        for r in drifting
    ]
    unpaid = session.execute(_CONSUMED_SQL, {"limit": limit})
    problems += [
        f"entry {r.id} ({r.customer_id}/{r.currency}): debit of {r.amount} but its lots gave "
        f"{r.consumed}"
        for r in unpaid
    ]
    mismatched = session.execute(_HELD_SQL, {"limit": limit})
    problems += [
        f"wallet {r.customer_id}/{r.currency}: held {r.held} but its active holds sum to {r.active}"
        for r in mismatched
    ]
    overcaptured = session.execute(_CAPTURED_SQL, {"limit": limit})
    problems += [
        f"hold {r.hold_id} ({r.customer_id}): amount {r.amount}, captured {r.captured_amount}, "
        f"its entry debited {r.debited or 0}"
        for r in overcaptured
    ]
    negative = session.execute(
        select(Wallet.customer_id, Wallet.currency, Wallet.balance).where(Wallet.balance < 0)
    )
    problems += [
        f"wallet {r.customer_id}/{r.currency}: negative balance {r.balance}" for r in negative
    ]
    return VerifyReport(wallets=wallets, entries=entries, problems=problems)
