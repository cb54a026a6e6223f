"""Edge-triggered low-balance and depleted detection, with the state kept on the wallet row.

Both judge the *available* balance, ``balance - held`` (what debits may spend while holds
reserve the rest). A wallet is *low* when its available balance is below its threshold (the
customer's override for the currency, else LOW_BALANCE_THRESHOLDS). ``wallets.low_state``
moves

    unarmed --(balance reaches threshold, silently)--> normal
    normal  --(balance < threshold:  wallet.balance_low)--> low
    low     --(balance >= threshold: wallet.balance_recovered)--> normal

and ``wallets.depleted`` becomes true, with ``wallet.depleted``, when the available balance
reaches 0, and false again (silently) when it rises above 0: once per crossing.

Every move is a conditional UPDATE on the state it was read in, and the outbox message is
written in the same transaction: however many checkers race (the immediate check of each of
several concurrent debits, the scheduled scan), one UPDATE matches and the others match
nothing, so each crossing is announced exactly once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sqlalchemy import and_, exists, or_, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from worker.config import Settings
from worker.infra.db import get_engine, settings_of, transaction
from worker.infra.metrics import LOW_BALANCE_TRANSITIONS
from worker.models import Customer, LedgerEntry, Wallet
from worker.notify import outbox

log = logging.getLogger(__name__)

# Wallets reconciled per transaction during a scan: few enough that row locks are brief.
BATCH = 50


@dataclass(frozen=True)
class Transition:
    customer_id: str
    currency: str
    old: str
    new: str
    balance: int
    threshold: int
    event: str | None  # None when a wallet arms silently
    message_ids: tuple[str, ...] = ()


class WalletState(NamedTuple):
    """A wallet as a posting left it: enough to tell whether ``reconcile`` could move it."""

    customer_id: str
    currency: str
    balance: int
    low_state: str
    low_balance_thresholds: Any  # the customer's overrides (JSON), or None
    held: int = 0
    depleted: bool = True


def available_of(row: Any) -> int:
    """The available balance of a wallet row (``balance - held``; 0 when holds exceed it)."""
    return max(row.balance - (row.held or 0), 0)


def overrides_of(raw: Any) -> dict[str, int]:
    """A customer's ``low_balance_thresholds`` JSON as ``{"USD": 500}`` (junk ignored)."""
    if not isinstance(raw, dict):
        return {}
    return {
        str(code).upper(): value
        for code, value in raw.items()
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0
    }


def _ever_reached(session: Session, customer_id: str, currency: str, threshold: int) -> bool:
    # An unarmed wallet whose arming check was lost (worker down when it was topped up) is
    # armed all the same if its history ever reached the threshold.
    return bool(
        session.scalar(
            select(
                exists().where(
                    LedgerEntry.customer_id == customer_id,
                    LedgerEntry.currency == currency,
                    LedgerEntry.after_balance >= threshold,
                )
            )
        )
    )


def _read(session: Session, customer_id: str, currency: str) -> Any:
    # One round trip for the wallet and the customer's overrides.
    return session.execute(
        select(
            Wallet.balance,
            Wallet.low_state,
            Customer.low_balance_thresholds,
            Wallet.held,
            Wallet.depleted,
        )
        .join(Customer, Customer.customer_id == Wallet.customer_id)
        .where(Wallet.customer_id == customer_id, Wallet.currency == currency)
    ).one_or_none()


def reconcile(
    session: Session,
    customer_id: str,
    currency: str,
    *,
    source: str = "check",
    observed: Any = None,
) -> Transition | None:
    """Bring one wallet's ``low_state`` and ``depleted`` in line with its available balance;
    announce a crossing.

    Never commits. Returns the transition made (the low-balance one when both moved), or None
    when the state already agreed (or another checker made the move first). ``observed``
    (balance, low_state, low_balance_thresholds, held, depleted as the scan just read them)
    saves the first read; it may be stale, which the conditional UPDATE detects, and then the
    wallet is read afresh.
    """
    moves = reconcile_all(session, customer_id, currency, source=source, observed=observed)
    return moves[0] if moves else None


def reconcile_all(
    session: Session,
    customer_id: str,
    currency: str,
    *,
    source: str = "check",
    observed: Any = None,
) -> list[Transition]:
    """``reconcile``, returning every transition made (low-balance, then depleted)."""
    moves = []
    low = _reconcile_low(session, customer_id, currency, source=source, observed=observed)
    if low is not None:
        moves.append(low)
        observed = None  # the wallet changed under us (we moved it): read it again
    empty = _reconcile_depleted(session, customer_id, currency, source=source, observed=observed)
    if empty is not None:
        moves.append(empty)
    return moves


def _latest_entry(customer_id: str, currency: str) -> Any:
    """The entry that left the wallet at its balance (read under the row lock just taken)."""
    return (
        select(LedgerEntry.id)
        .where(LedgerEntry.customer_id == customer_id, LedgerEntry.currency == currency)
        .order_by(LedgerEntry.seq.desc())
        .limit(1)
        .scalar_subquery()
    )


def _reconcile_depleted(
    session: Session, customer_id: str, currency: str, *, source: str, observed: Any
) -> Transition | None:
    key = (Wallet.customer_id == customer_id, Wallet.currency == currency)
    available = Wallet.balance - Wallet.held
    for attempt in range(5):
        row = observed if attempt == 0 and observed is not None else None
        row = row or _read(session, customer_id, currency)
        if row is None:
            return None
        empty = available_of(row) == 0
        if bool(row.depleted) == empty:
            return None
        # Conditional on the state we read, as for low_state: one racing checker moves it.
        moved = session.execute(
            update(Wallet)
            .where(
                *key,
                Wallet.depleted.is_(not empty),
                available <= 0 if empty else available > 0,
            )
            .values(depleted=empty)
            .returning(Wallet.balance, Wallet.held, _latest_entry(customer_id, currency)),
            execution_options={"synchronize_session": False},
        ).first()
        if moved is None:
            continue
        ids: tuple[str, ...] = ()
        if empty:
            data = {
                "payload_type": "WalletBalance",
                "customer_id": customer_id,
                "currency": currency,
                "balance": moved[0],
                "held_balance": moved[1],
                "available_balance": 0,
                "ledger_entry_id": moved[2],
            }
            ids = tuple(m.id for m in outbox.enqueue_event(session, "wallet.depleted", data))
            LOW_BALANCE_TRANSITIONS.labels(kind="depleted", source=source).inc()
            log.info(
                "wallet depleted",
                extra={"customer_id": customer_id, "currency": currency, "source": source},
            )
        return Transition(
            customer_id,
            currency,
            "normal" if empty else "depleted",
            "depleted" if empty else "normal",
            max(moved[0] - moved[1], 0),
            0,
            "wallet.depleted" if empty else None,
            ids,
        )
    log.warning("depleted state of %s/%s kept changing; left to the scan", customer_id, currency)
    return None


def _reconcile_low(
    session: Session,
    customer_id: str,
    currency: str,
    *,
    source: str,
    observed: Any,
) -> Transition | None:
    configured = settings_of(session).low_balance_threshold_map.get(currency)
    key = (Wallet.customer_id == customer_id, Wallet.currency == currency)
    for attempt in range(5):
        row = observed if attempt == 0 and observed is not None else None
        row = row or _read(session, customer_id, currency)
        if row is None:
            return None
        threshold = overrides_of(row.low_balance_thresholds).get(currency, configured)
        if threshold is None:
            return None
        target = "low" if available_of(row) < threshold else "normal"
        if row.low_state == target:
            return None
        if row.low_state == "unarmed" and not _ever_reached(
            session, customer_id, currency, threshold
        ):
            return None
        # Conditional on the state we read: under READ COMMITTED a racing checker waits on the
        # row lock, then re-evaluates this WHERE against the committed row and matches nothing.
        available = Wallet.balance - Wallet.held
        condition = available < threshold if target == "low" else available >= threshold
        latest_entry = _latest_entry(customer_id, currency)
        moved = session.execute(
            update(Wallet)
            .where(*key, Wallet.low_state == row.low_state, condition)
            .values(low_state=target)
            .returning(Wallet.balance, Wallet.held, latest_entry.label("entry_id")),
            execution_options={"synchronize_session": False},
        ).first()
        if moved is None:
            continue  # the balance or the state changed under us: look again
        return _announce(
            session,
            customer_id,
            currency,
            (row.low_state, target),
            (moved.balance, moved.held),
            threshold,
            moved.entry_id,
            source,
        )
    log.warning("low-balance state of %s/%s kept changing; left to the scan", customer_id, currency)
    return None


def _announce(
    session: Session,
    customer_id: str,
    currency: str,
    move: tuple[str, str],
    balances: tuple[int, int],
    threshold: int,
    entry_id: str | None,
    source: str,
) -> Transition:
    old, new = move
    # ``balance`` stays the ledger balance (as everywhere); the crossing is the available one.
    ledger_balance, held = balances
    balance = max(ledger_balance - held, 0)
    event: str | None
    if new == "low":
        event, kind = "wallet.balance_low", "low"
    elif old == "low":
        event, kind = "wallet.balance_recovered", "recovered"
    else:
        event, kind = None, "armed"
    ids: tuple[str, ...] = ()
    if event is not None:
        data = {
            "payload_type": "WalletBalance",
            "customer_id": customer_id,
            "currency": currency,
            "balance": ledger_balance,
            "held_balance": held,
            "available_balance": balance,
            "threshold": threshold,
            "ledger_entry_id": entry_id,
        }
        ids = tuple(m.id for m in outbox.enqueue_event(session, event, data))
    LOW_BALANCE_TRANSITIONS.labels(kind=kind, source=source).inc()
    log.info(
        "low-balance %s",
        kind,
        extra={
            "customer_id": customer_id,
            "currency": currency,
            "balance": balance,
            "threshold": threshold,
            "source": source,
            "message_ids": list(ids),
        },
    )
    return Transition(customer_id, currency, old, new, balance, threshold, event, ids)


def check_wallet(settings: Settings, customer_id: str, currency: str) -> Transition | None:
    """Check one wallet in its own transaction (tests and tools; balance changes are checked
    in their own transaction, by ``commit_hooks``)."""
    with transaction(settings) as session:
        return reconcile(session, customer_id, currency)


# -- the scheduled scan --------------------------------------------------------------------


@dataclass
class ScanResult:
    candidates: int = 0
    transitions: list[Transition] = field(default_factory=list)

    @property
    def notified(self) -> int:
        return sum(1 for t in self.transitions if t.event is not None)

    def as_dict(self) -> dict[str, int]:
        kinds = [
            t.event or ("rearmed" if t.old == "depleted" else "armed") for t in self.transitions
        ]
        return {
            "candidates": self.candidates,
            "balance_low": kinds.count("wallet.balance_low"),
            "balance_recovered": kinds.count("wallet.balance_recovered"),
            "armed": kinds.count("armed"),
            "depleted": kinds.count("wallet.depleted"),
        }


# What the scan reads of each candidate: enough for reconcile() to skip its first read.
_CANDIDATE = select(
    Wallet.customer_id,
    Wallet.currency,
    Wallet.balance,
    Wallet.low_state,
    Customer.low_balance_thresholds,
    Wallet.held,
    Wallet.depleted,
).join(Customer, Customer.customer_id == Wallet.customer_id)


def candidate_queries(settings: Settings) -> list[Any]:
    """SELECTs of (customer_id, currency) whose state may disagree with their balance.

    Each is an index range scan, so the scan's cost follows the number of low wallets:
    per configured currency, wallets under the threshold not yet marked low
    (ix_wallets_currency_balance) and wallets marked low now at or above it
    (ix_wallets_low_currency_balance, partial); plus every wallet of the customers with
    overrides (ix_customers_threshold_overrides, partial). Holds make the available balance
    (``balance - held``) the one judged: wallets holding something are visited through
    ix_wallets_held_currency (partial, ``held > 0``), and empty wallets not yet marked
    depleted through ix_wallets_currency_balance (``balance = 0``). A depleted wallet that
    rose above 0 is re-armed by the check of the change that raised it (every posting and hold
    move reconciles its wallet before commit), so the scan need not look for those.
    """
    queries: list[Any] = []
    available = Wallet.balance - Wallet.held
    for currency in settings.wallet_currencies:
        queries.append(
            _CANDIDATE.where(
                Wallet.currency == currency,
                or_(Wallet.balance == 0, Wallet.held > 0),
                available <= 0,
                Wallet.depleted.is_(False),
            )
        )
    for currency, threshold in settings.low_balance_threshold_map.items():
        armed_by_history = exists().where(
            LedgerEntry.customer_id == Wallet.customer_id,
            LedgerEntry.currency == Wallet.currency,
            LedgerEntry.after_balance >= threshold,
        )
        queries.append(
            _CANDIDATE.where(
                Wallet.currency == currency,
                or_(Wallet.balance < threshold, Wallet.held > 0),
                available < threshold,
                or_(
                    Wallet.low_state == "normal",
                    and_(Wallet.low_state == "unarmed", armed_by_history),
                ),
            )
        )
        queries.append(
            _CANDIDATE.where(
                Wallet.currency == currency,
                Wallet.balance >= threshold,
                available >= threshold,
                Wallet.low_state == "low",
            )
        )
    queries.append(_CANDIDATE.where(Customer.low_balance_thresholds.is_not(None)))
    return queries


def may_disagree(row: Any, configured: dict[str, int]) -> bool:
    """Could reconcile() change anything? (Judged on the row as read — a ``WalletState`` or a
    scan row — with the customer's own threshold: a wallet under the configured threshold may
    be above its override.)"""
    available = available_of(row)
    if (available == 0) != bool(row.depleted):
        return True
    threshold = overrides_of(row.low_balance_thresholds).get(row.currency)
    if threshold is None:
        threshold = configured.get(row.currency)
    if threshold is None:
        return False
    if available < threshold:
        return row.low_state != "low"  # normal, or unarmed (armed by history?)
    return row.low_state != "normal"


def _stream(settings: Settings, query: Any) -> Iterator[Any]:
    engine = get_engine(settings)
    if engine.dialect.name == "postgresql":
        # A server-side cursor on its own connection: rows arrive in chunks, never all at once,
        # while the reconciling transactions run on other connections.
        with engine.connect() as connection:
            result = connection.execution_options(stream_results=True, yield_per=1000).execute(
                query
            )
            yield from result
            connection.rollback()
    else:
        # SQLite takes its write lock at BEGIN; a reader left open would block the writers, and
        # SQLite installs are small, so read the (index-selected) candidates first.
        with transaction(settings) as session:
            rows = list(session.execute(query))
        yield from rows


def _reconcile_batch(settings: Settings, batch: list[Any], result: ScanResult) -> None:
    """Reconcile a few wallets per transaction (fewer commits); if that transaction fails (a
    deadlock victim, say), redo them one per transaction so one wallet cannot block the rest."""
    if not batch:
        return
    try:
        with transaction(settings) as session, session.no_autoflush:
            # No autoflush: the batch's outbox rows are inserted together at commit, not one
            # INSERT before each wallet's UPDATE.
            moved = [
                reconcile_all(session, r.customer_id, r.currency, source="scan", observed=r)
                for r in batch
            ]
        result.transitions += [m for moves in moved for m in moves]
    except OperationalError:
        for r in batch:
            try:
                with transaction(settings) as session:
                    moves = reconcile_all(session, r.customer_id, r.currency, source="scan")
            except OperationalError as exc:
                log.warning(
                    "scan could not reconcile %s/%s: %s", r.customer_id, r.currency, exc.orig
                )
                continue
            result.transitions += moves
    batch.clear()


def scan(settings: Settings) -> ScanResult:
    """Find wallets whose state disagrees with their balance and fix them (scheduled scan)."""
    result = ScanResult()
    seen: set[tuple[str, str]] = set()
    batch: list[Any] = []
    configured = settings.low_balance_threshold_map
    for query in candidate_queries(settings):
        for row in _stream(settings, query):
            key = (row.customer_id, row.currency)
            if key in seen or not may_disagree(row, configured):
                continue  # an override customer's wallet that agrees with its own threshold
            seen.add(key)
            result.candidates += 1
            batch.append(row)
            if len(batch) >= BATCH:
                _reconcile_batch(settings, batch, result)
    _reconcile_batch(settings, batch, result)
    if result.transitions:
        log.info("low-balance scan", extra=result.as_dict())
    return result
