"""Credit lots: what each credit brought, what is left of it, and which lots a debit spends.

Every credit creates a lot; every debit draws from its wallet's live lots in one fixed order
(``spending_order``) and records how much it took from each. A lot is live until its
``expires_at``; after that its remainder can only be taken by its own ``expiration`` entry
(``worker.ledger.expiry``). The posting pipeline calls ``load`` for the wallets it has locked,
``Book.credit`` and ``Book.draw`` for each leg and ``Book.rows`` for what to write; nothing here
commits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from worker.ledger import pg
from worker.models import CreditLot, new_id

# Lots created by the posting being judged sort after every stored lot of their wallet (they
# are the newest), in the order they were created.
_NEW = 1 << 62


@dataclass(slots=True)
class Lot:
    """A lot as a posting sees it: its stored state, and what this posting takes from it."""

    id: str
    seq: int
    remaining: int
    category: str
    expires_at: datetime | None
    created_at: datetime
    new: dict[str, Any] | None = None  # the row to insert, for a lot this posting creates
    taken: int = 0
    expired: int = 0

    def live(self, now: datetime) -> bool:
        return self.expires_at is None or self.expires_at > now


def spending_order(lot: Lot) -> tuple[Any, ...]:
    """Soonest expiry first (lots that never expire last), then promotional before paid, then
    oldest first: the credit most likely to be lost is spent first, and given credit before
    bought credit of the same expiry."""
    return (
        lot.expires_at is None,
        lot.expires_at or datetime.max,
        lot.category != "promotional",
        lot.seq,
    )


@dataclass
class Book:
    """The lots of the wallets one posting touches, and what it does to them."""

    lots: dict[tuple[str, str], list[Lot]] = field(default_factory=dict)
    consumptions: list[dict[str, Any]] = field(default_factory=list)
    _created: int = 0

    def spendable(self, wallet: tuple[str, str], now: datetime) -> int:
        """What a debit may spend now: the remainder of the wallet's live lots."""
        return sum(lot.remaining for lot in self.lots.get(wallet, ()) if lot.live(now))

    def remaining(self, wallet: tuple[str, str], lot_id: str) -> int:
        """What is left of one lot of the wallet, live or not (0 for a lot not loaded)."""
        return sum(lot.remaining for lot in self.lots.get(wallet, ()) if lot.id == lot_id)

    def credit(self, wallet: tuple[str, str], entry: dict[str, Any], leg: Any) -> dict[str, Any]:
        """A new lot for the credit ``entry`` (``leg`` says its category and expiry)."""
        row = lot_row(entry, leg)
        self._created += 1
        lot = Lot(
            id=row["id"],
            seq=_NEW + self._created,
            remaining=row["amount"],
            category=row["category"],
            expires_at=row["expires_at"],
            created_at=row["created_at"],
            new=row,
        )
        lots = self.lots.setdefault(wallet, [])
        lots.append(lot)
        lots.sort(key=spending_order)
        return row

    def draw(
        self,
        wallet: tuple[str, str],
        entry_id: str,
        amount: int,
        now: datetime,
        *,
        first: str | None = None,
        expiring: str | None = None,
    ) -> list[dict[str, Any]]:
        """Take ``amount`` for the debit ``entry_id`` from the wallet's live lots in spending
        order, ``first`` (a live lot, such as the top-up a reversal takes back) before the
        rest; an expiration takes only the lot ``expiring``, live or not. The caller has
        checked that the lots hold ``amount``; the consumptions are returned (and kept)."""
        lots = self.lots.get(wallet, [])
        if expiring is not None:
            order = [lot for lot in lots if lot.id == expiring]
        else:
            live = [lot for lot in lots if lot.remaining > 0 and lot.live(now)]
            order = sorted(live, key=lambda lot: lot.id != first) if first else live
        taken = []
        left = amount
        for lot in order:
            if left == 0:
                break
            take = min(lot.remaining, left)
            if take == 0:
                continue
            lot.remaining -= take
            left -= take
            if lot.new is not None:
                lot.new["remaining"] = lot.remaining
            else:
                lot.taken += take
            if expiring is not None:
                lot.expired += take
                if lot.new is not None:
                    lot.new["expired"] = lot.expired
            taken.append({"entry_id": entry_id, "lot_id": lot.id, "amount": take})
        if left:
            raise AssertionError(f"lots of {wallet} hold {amount - left} of {amount}")
        self.consumptions += taken
        return taken

    def rows(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
        """What to write: new lots, changes to stored lots (``taken``, ``expired``), and the
        consumptions."""
        new, changed = [], []
        for lots in self.lots.values():
            for lot in lots:
                if lot.new is not None:
                    new.append((lot.seq, lot.new))
                elif lot.taken:
                    changed.append({"id": lot.id, "taken": lot.taken, "expired": lot.expired})
        new.sort(key=lambda pair: pair[0])  # in the order they were credited
        return [row for _, row in new], changed, self.consumptions


def lot_row(entry: dict[str, Any], leg: Any) -> dict[str, Any]:
    """The lot a credit entry creates (its keys are ``pg.LOT_COLUMNS``)."""
    return {
        "id": new_id("lot"),
        "customer_id": entry["customer_id"],
        "currency": entry["currency"],
        "entry_id": entry["id"],
        "amount": entry["amount"],
        "remaining": entry["amount"],
        "expired": 0,
        "category": leg.category or "paid",
        "expires_at": leg.expires_at,
        "created_at": entry["created_at"],
    }


# How many live lots a posting first reads per wallet: almost always enough. A wallet whose
# first lots do not hold what its debits ask for is read whole.
FIRST_LOTS = 16


def load(
    session: Session, needs: dict[tuple[str, str], int], named: set[str], now: datetime
) -> Book:
    """The lots a posting may spend: for each wallet, its live lots in spending order until
    they hold ``needs[wallet]`` (all of them when they do not), plus the lots ``named`` (live
    or not). The caller has locked the wallets, so nothing else spends these lots until its
    transaction ends; ``Book.spendable`` is exact whenever it is less than the need."""
    wallets = sorted(w for w, need in needs.items() if need > 0)
    found: dict[tuple[str, str], dict[str, Lot]] = {}
    for customer_id, currency, *lot in _fetch(session, wallets, named, now, FIRST_LOTS):
        found.setdefault((customer_id, currency), {})[lot[0]] = Lot(*lot)
    book = Book({w: list(lots.values()) for w, lots in found.items()})
    short = [
        w
        for w in wallets
        if sum(lot.live(now) for lot in book.lots.get(w, ())) >= FIRST_LOTS
        and book.spendable(w, now) < needs[w]
    ]
    for customer_id, currency, *lot in _fetch(session, short, set(), now, None):
        found[(customer_id, currency)][lot[0]] = Lot(*lot)
    for w in short:
        book.lots[w] = list(found[w].values())
    for lots in book.lots.values():
        lots.sort(key=spending_order)
    return book


def _fetch(
    session: Session,
    wallets: list[tuple[str, str]],
    named: set[str],
    now: datetime,
    limit: int | None,
) -> list[Any]:
    if not wallets and not named:
        return []
    if session.get_bind().dialect.name == "postgresql":
        return list(
            session.execute(
                pg.SPENDABLE_LOTS,
                {
                    "wallets": pg.rows_json(
                        [{"customer_id": c, "currency": v} for c, v in wallets]
                    ),
                    "named": pg.rows_json(sorted(named)),
                    "now": now,
                    "limit": limit,
                },
            )
        )
    t = CreditLot
    columns = (
        t.customer_id,
        t.currency,
        t.id,
        t.seq,
        t.remaining,
        t.category,
        t.expires_at,
        t.created_at,
    )
    rows: list[Any] = []
    for customer_id, currency in wallets:
        rows += session.execute(
            select(*columns)
            .where(
                t.customer_id == customer_id,
                t.currency == currency,
                t.remaining > 0,
                or_(t.expires_at.is_(None), t.expires_at > now),
            )
            .order_by(t.expires_at.is_(None), t.expires_at, t.category.desc(), t.seq)
            .limit(limit)
        ).all()
    if named:
        rows += session.execute(
            select(*columns).where(t.id.in_(sorted(named)), t.remaining > 0)
        ).all()
    return rows
