"""The business-wide figures per currency for ``[from, to)``: what was credited and debited
(by event type), what expired (paid and promotional apart, ``worker.ledger.breakage``), the
liability (the sum of every wallet's balance) at ``to``, what holds reserved at ``to``, and
the usage still owed or accrued now. (The liability at ``from`` is the previous period's:
asking for it here would double the summary's cost, a walk back each wallet's chain from
``from``.)

Credits and debits are summed by ``created_at`` over one index (``created_at`` with the
columns summed, so PostgreSQL reads no table row); each wallet's balance at a moment is its
``after_balance`` at that point of its chain (``balances.point_seq``: a few index entries
per wallet for a recent moment).

**Held at ``to``.** Holds have no entries, but every hold keeps when it began (``created_at``)
and when it was captured, released or expired (``closed_at``, set by every move out of
``active``), so what was held at a moment is the sum of the holds created before it and not
closed before it: for a ``to`` now or later, exactly ``Σ wallets.held``. A hold past its
expiry counts until the expiry task (or the wallet's next hold move) closes it, as it counted
in ``wallets.held``. It reads every hold created before ``to`` (no index serves it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import BigInteger, cast, func, or_, select, text
from sqlalchemy.orm import Session

from worker.infra.db import settings_of
from worker.ledger.breakage import ExpiredTotals, expired_between
from worker.models import LedgerEntry, UsageEvent, Wallet, WalletHold
from worker.reports.balances import point_seq
from worker.reports.periods import Period


@dataclass
class CurrencySummary:
    currency: str
    credited: dict[str, int] = field(default_factory=dict)  # event type -> minor units
    debited: dict[str, int] = field(default_factory=dict)
    entries: int = 0
    expired: ExpiredTotals | None = None
    liability: int = 0  # sum of balances at ``to``
    held: int = 0  # sum of the holds active at ``to`` (part of the liability, not debited)
    unbilled_usage: int = 0  # whole minor units owed by usage events now
    pending_usage_scaled: int = 0  # accrued usage below a minor unit now, 10**-12 units

    @property
    def total_credited(self) -> int:
        return sum(self.credited.values())

    @property
    def total_debited(self) -> int:
        return sum(self.debited.values())


# Each wallet's entry at the moment, looked up by seq: one short walk per wallet (constants
# only; the moment is bound).
_LIABILITY_PG = (
    "SELECT w.currency, CAST(sum((SELECT e.after_balance FROM ledger_entries e "  # noqa: S608
    f"WHERE e.seq = {point_seq('w.customer_id', 'w.currency', False)})) AS bigint) "
    "FROM wallets w GROUP BY w.currency"
)


def _liability(session: Session, moment: datetime) -> list[tuple[str, int]]:
    """Per currency, the sum over wallets of the balance just before ``moment``."""
    e = LedgerEntry
    if session.get_bind().dialect.name == "postgresql":
        rows = session.execute(text(_LIABILITY_PG), {"m": moment})
        return [(c, int(t or 0)) for c, t in rows]
    at = (
        select(e.after_balance)
        .where(
            e.customer_id == Wallet.customer_id,
            e.currency == Wallet.currency,
            e.created_at < moment,
        )
        .order_by(e.seq.desc())
        .limit(1)
        .correlate(Wallet)
        .scalar_subquery()
    )
    rows = session.execute(
        select(Wallet.currency, cast(func.coalesce(func.sum(at), 0), BigInteger)).group_by(
            Wallet.currency
        )
    )
    return [(c, int(t)) for c, t in rows]


def _held(session: Session, moment: datetime) -> list[tuple[str, int]]:
    """Per currency, what the holds active just before ``moment`` reserved."""
    h = WalletHold
    rows = session.execute(
        select(h.currency, cast(func.sum(h.amount), BigInteger))
        .where(h.created_at < moment, or_(h.closed_at.is_(None), h.closed_at >= moment))
        .group_by(h.currency)
    )
    return [(c, int(t or 0)) for c, t in rows]


def summary(session: Session, p: Period) -> list[CurrencySummary]:
    """One line per configured currency (zeros included), then any other currency found."""
    e = LedgerEntry
    lines: dict[str, CurrencySummary] = {}

    def line(currency: str) -> CurrencySummary:
        return lines.setdefault(currency, CurrencySummary(currency))

    for currency in settings_of(session).wallet_currencies:
        line(currency)
    for currency, is_credit, event_type, amount, count in session.execute(
        select(
            e.currency,
            e.is_credit,
            e.event_type,
            cast(func.sum(e.amount), BigInteger),
            func.count(),
        )
        .where(e.created_at >= p.start, e.created_at < p.end)
        .group_by(e.currency, e.is_credit, e.event_type)
    ):
        target = line(currency)
        (target.credited if is_credit else target.debited)[event_type] = int(amount)
        target.entries += int(count)
    # The expired split is read only where expiration entries were found above.
    if p.end > p.start and any("expiration" in c.debited for c in lines.values()):
        for totals in expired_between(session, p.start, p.end):
            line(totals.currency).expired = totals
    for currency, total in _liability(session, p.end):
        line(currency).liability = total
    for currency, held in _held(session, p.end):
        line(currency).held = held
    for currency, owed in session.execute(
        select(UsageEvent.currency, cast(func.sum(UsageEvent.unbilled_amount), BigInteger))
        .where(UsageEvent.status == "unbilled")
        .group_by(UsageEvent.currency)
    ):
        if currency is not None:
            line(currency).unbilled_usage = int(owed)
    for currency, pending in session.execute(
        select(Wallet.currency, cast(func.sum(Wallet.pending_usage_scaled), BigInteger)).group_by(
            Wallet.currency
        )
    ):
        line(currency).pending_usage_scaled = int(pending or 0)
    configured = list(settings_of(session).wallet_currencies)
    order = configured + sorted(set(lines) - set(configured))
    for c in order:
        if lines[c].expired is None:
            lines[c].expired = ExpiredTotals(c)
    return [lines[c] for c in order]
