"""Holds: money reserved on a wallet for work in flight (and for open disputes).

A hold is not a ledger entry: the wallet's balance stays the ledger's balance (Dodo's
definition), and ``wallets.held`` (kept by the trigger on ``wallet_holds``, migration 0015)
says how much of it active holds reserve. Every debit spends only the available balance,
``balance - held`` (``worker.ledger.transactional``, ``pg.DEBIT``). A hold ends once:

- **captured**: one debit entry of the captured amount (at most the hold), posted through the
  posting pipeline, drawing lots like any debit; the rest of the hold is released with it;
- **released**: all of it, nothing debited;
- **expired**: past ``expires_at`` (``expire_holds``, the ``release-expired-holds`` task); a
  hold past its expiry can no longer be captured even before the task runs.

Concurrency: every function here first locks the wallet row (``lock_wallets``, ``SELECT ...
FOR UPDATE``, the posting pipeline's one lock order) and only then reads the hold and the
lots. A conditional ``UPDATE wallets ... WHERE balance - held >= amount`` cannot decide alone:
what a hold may reserve is the *live* lots less what is held (an expired lot's remainder still
counts in the balance until its expiration entry), and a capture must move the hold and post
its debit under one lock. Every hold move and every debit of the wallet queue on that row, so
of a capture racing the expiry task, or two captures, exactly one finds the hold active.

Nothing here commits; the caller owns the transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from worker.errors import (
    HoldNotActive,
    HoldNotFound,
    IdempotencyKeyReused,
    InsufficientBalance,
    ValidationFailed,
)
from worker.infra.db import settings_of
from worker.ledger import lots
from worker.ledger.keys import IdempotencyKey, client_key, fingerprint, system_key, validate_key
from worker.ledger.legs import Leg, OnShort, Posted
from worker.ledger.objects import transient
from worker.ledger.posting import post
from worker.ledger.schemas import iso
from worker.ledger.validation import currency_of, validate_amount, validate_page
from worker.ledger.wallets import LockedWallet, lock_wallets
from worker.models import HOLD_STATUSES, WalletHold, new_id, utcnow
from worker.notify import commit_hooks
from worker.notify.outbox import enqueue_event

# The longest a hold may last (a hold is for work in flight, not a standing reservation).
MAX_HOLD_SECONDS = 7 * 24 * 3600
MAX_REASON_LENGTH = 1000
EXPIRY_BATCH = 500


@dataclass(frozen=True)
class HoldOutcome:
    """A hold as a call left it. ``replayed``: the call repeated an earlier one (same key, or
    the same capture/release) and nothing changed. ``shortfall``: what a dispute could not
    hold, or what a capture could not take (lots expired under the hold)."""

    hold: WalletHold | None
    replayed: bool = False
    shortfall: int = 0
    posted: Posted | None = None


def _row(session: Session, customer_id: str, hold_id: str) -> WalletHold | None:
    # populate_existing: under the wallet lock, the row as committed now, not as cached.
    return session.scalars(
        select(WalletHold)
        .where(WalletHold.customer_id == customer_id, WalletHold.hold_id == hold_id)
        .execution_options(populate_existing=True)
    ).one_or_none()


def get_hold(session: Session, customer_id: str, hold_id: str) -> WalletHold:
    hold = _row(session, customer_id, hold_id) if isinstance(hold_id, str) else None
    if hold is None:
        raise HoldNotFound(str(hold_id))
    return hold


def list_holds(
    session: Session,
    customer_id: str,
    *,
    status: str | None = None,
    currency: str | None = None,
    kind: str | None = None,
    page_number: int = 0,
    page_size: int = 10,
) -> list[WalletHold]:
    """The customer's holds, newest first."""
    page_number, page_size = validate_page(page_number, page_size)
    query = select(WalletHold).where(WalletHold.customer_id == customer_id)
    if status is not None:
        if status not in HOLD_STATUSES:
            raise ValidationFailed("status", f"must be one of {', '.join(HOLD_STATUSES)}")
        query = query.where(WalletHold.status == status)
    if currency is not None:
        query = query.where(WalletHold.currency == currency_of(settings_of(session), currency))
    if kind is not None:
        query = query.where(WalletHold.kind == kind)
    query = (
        query.order_by(WalletHold.created_at.desc(), WalletHold.hold_id)
        .offset(page_number * page_size)
        .limit(page_size)
    )
    return list(session.scalars(query))


def _params(
    currency: str, amount: int, kind: str, reason: str | None, ref: str | None, ttl: int | None
) -> dict[str, Any]:
    return {
        "currency": currency,
        "amount": amount,
        "is_credit": False,
        "event_type": kind,
        "reason": reason,
        "reference_object_id": ref,
        "expires_in_seconds": ttl,
    }


def _by_key(session: Session, customer_id: str, key: IdempotencyKey) -> WalletHold | None:
    return session.scalars(
        select(WalletHold).where(
            WalletHold.customer_id == customer_id,
            WalletHold.key_scope == key.scope,
            WalletHold.idempotency_key == key.value,
        )
    ).one_or_none()


def _answer_key(original: WalletHold, key: IdempotencyKey, params: dict[str, Any]) -> HoldOutcome:
    """A repeated create: the original hold when the parameters match, else a refusal naming
    what differs."""
    if original.fingerprint == fingerprint(**params):
        return HoldOutcome(original, replayed=True)
    named = {"currency": original.currency, "amount": original.amount, "reason": original.reason}
    differing = [f for f, v in named.items() if params[f] != v] or ["parameters"]
    raise IdempotencyKeyReused(key.value, differing, original)


def _available(session: Session, wallet: LockedWallet, amount: int, now: datetime) -> int:
    """What a new hold may reserve: the live lots less what is already held."""
    if wallet.balance - wallet.held < amount:
        return max(wallet.balance - wallet.held, 0)  # short already (live lots <= balance)
    key = (wallet.customer_id, wallet.currency)
    book = lots.load(session, {key: wallet.held + amount}, set(), now)
    return max(book.spendable(key, now) - wallet.held, 0)


def create_hold(
    session: Session,
    *,
    customer_id: str,
    currency: str,
    amount: int,
    actor: str,
    idempotency_key: str | IdempotencyKey | None = None,
    reason: str | None = None,
    reference_object_id: str | None = None,
    expires_in_seconds: int | None = None,
    kind: str = "hold",
    take_available: bool = False,
) -> HoldOutcome:
    """Reserve ``amount`` of the wallet's available balance. Never commits.

    More than is available raises ``InsufficientBalance`` (nothing held), unless
    ``take_available`` (disputes): then what is available is held (nothing when it is 0) and
    the rest is the outcome's ``shortfall``. A repeated key answers the original hold (its
    parameters must match: ``IdempotencyKeyReused`` otherwise). A ``dispute`` never expires.
    """
    settings = settings_of(session)
    validate_amount(amount)
    currency = currency_of(settings, currency)
    key = validate_key(client_key(idempotency_key))
    if reason is not None and (not isinstance(reason, str) or len(reason) > MAX_REASON_LENGTH):
        raise ValidationFailed("reason", f"must be a string of at most {MAX_REASON_LENGTH}")
    if kind == "dispute":
        if expires_in_seconds is not None:
            raise ValidationFailed("expires_in_seconds", "a dispute's hold never expires")
        ttl = None
    else:
        ttl = expires_in_seconds
        if ttl is not None and (
            isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 < ttl <= MAX_HOLD_SECONDS
        ):
            raise ValidationFailed(
                "expires_in_seconds", f"must be an integer between 1 and {MAX_HOLD_SECONDS}"
            )
    params = _params(currency, amount, kind, reason, reference_object_id, ttl)
    wallet = lock_wallets(session, [(customer_id, currency)])[(customer_id, currency)]
    if key is not None:
        original = _by_key(session, customer_id, key)
        if original is not None:
            return _answer_key(original, key, params)
    now = utcnow()
    if wallet.held:
        # Holds of this wallet past their expiry stop reserving now, not at the next task run.
        released = _expire(session, [(customer_id, currency)], now, limit=None)
        if released:
            wallet = wallet._replace(held=wallet.held - sum(h["amount"] for h in released))
    available = _available(session, wallet, amount, now)
    shortfall = 0
    if available < amount:
        if not take_available:
            raise InsufficientBalance(balance=available, requested=amount, currency=currency)
        shortfall = amount - available
        if available == 0:
            return HoldOutcome(None, shortfall=shortfall)
    ttl_used = ttl if ttl is not None else settings.hold_ttl_seconds
    values = {
        "customer_id": customer_id,
        "hold_id": new_id("hold"),
        "currency": currency,
        "kind": kind,
        "amount": amount - shortfall,
        "captured_amount": 0,
        "status": "active",
        "reason": reason,
        "reference_object_id": reference_object_id,
        "idempotency_key": key.value if key else None,
        "key_scope": key.scope if key else "client",
        "fingerprint": fingerprint(**params),
        "expires_at": None if kind == "dispute" else now + timedelta(seconds=ttl_used),
        "entry_id": None,
        "actor": actor,
        "created_at": now,
        "closed_at": None,
        "closed_by": None,
    }
    statement = insert(WalletHold.__table__).values(**values)
    if key is None:
        session.execute(statement)
    else:
        try:
            # Another currency's wallet is another lock: a concurrent create with the same key
            # may win the unique index; the savepoint keeps our transaction usable.
            with commit_hooks.savepoint(session):
                session.execute(statement)
        except IntegrityError:
            original = _by_key(session, customer_id, key)
            if original is None:
                raise
            return _answer_key(original, key, params)
    commit_hooks.wallet_changed(session, customer_id, currency)
    return HoldOutcome(transient(WalletHold, values), shortfall=shortfall)


def _locked_hold(
    session: Session, customer_id: str, hold_id: str, kind: str
) -> tuple[WalletHold, LockedWallet]:
    """The hold, read again after its wallet's lock (every move of it takes that lock)."""
    hold = get_hold(session, customer_id, hold_id)
    if hold.kind != kind:
        # A dispute's hold ends with its dispute (worker.payments.disputes), never by a call.
        raise ValidationFailed("hold_id", f"{hold_id} is a {hold.kind} hold; it ends with it")
    wallet = lock_wallets(session, [(customer_id, hold.currency)])[(customer_id, hold.currency)]
    return get_hold(session, customer_id, hold_id), wallet


def capture_hold(
    session: Session,
    *,
    customer_id: str,
    hold_id: str,
    actor: str,
    amount: int | None = None,
    event_type: str = "usage",
    reason: str | None = None,
    now: datetime | None = None,
    kind: str = "hold",
) -> HoldOutcome:
    """Capture ``amount`` of an active hold (default all of it): one debit entry for it and
    the rest released, in the caller's transaction. Never commits.

    Repeating the capture (no amount, or the amount it captured) answers the same hold. A
    hold captured otherwise, released, expired or past its expiry raises ``HoldNotActive``;
    more than the hold is a ``ValidationFailed`` naming ``amount``. The debit takes what the
    live lots hold when credit expired under the hold (the shortfall is reported).
    """
    if amount is not None:
        validate_amount(amount)
    hold, wallet = _locked_hold(session, customer_id, hold_id, kind)
    now = now or utcnow()
    if hold.status == "captured" and (amount is None or amount == hold.captured_amount):
        return HoldOutcome(hold, replayed=True)
    _require_active(hold, now, "captured")
    if amount is None:
        amount = hold.amount
    if amount > hold.amount:
        raise ValidationFailed(
            "amount", f"{amount} exceeds the hold's {hold.amount}", hold_amount=hold.amount
        )
    key = (customer_id, hold.currency)
    leg = Leg(
        customer_id=customer_id,
        currency=hold.currency,
        amount=amount,
        is_credit=False,
        event_type=event_type,
        reason=reason or hold.reason or f"hold {hold.hold_id} captured",
        reference_object_id=hold.hold_id,
        # At most one capture entry per hold, whatever happens to the state check.
        key=system_key("hold", hold.hold_id),
        # The work was done: take what the wallet has (all of it, unless lots expired).
        on_short=OnShort.TAKE,
        actor=actor,
    )
    # The hold's own reservation is what pays for its capture.
    unheld = {key: wallet._replace(held=wallet.held - hold.amount)}
    posted = post(session, [leg], locked=unheld)[0]
    assert posted is None or isinstance(posted, Posted)
    taken = posted.entry.amount if posted is not None else 0
    closed = close_hold(
        session,
        hold,
        "captured",
        actor,
        now,
        captured_amount=taken,
        entry_id=posted.entry.id if posted else None,
    )
    if posted is None:
        # Nothing debited: the release alone changed what is available.
        commit_hooks.wallet_changed(session, customer_id, hold.currency)
    # Otherwise the posting told the commit hooks the wallet's state after it, its held
    # total already without this hold (``unheld``): no second read at commit.
    return HoldOutcome(closed, shortfall=amount - taken, posted=posted)


def release_hold(
    session: Session,
    *,
    customer_id: str,
    hold_id: str,
    actor: str,
    now: datetime | None = None,
    kind: str = "hold",
) -> HoldOutcome:
    """Release all of an active hold. Never commits. A hold already released (or expired)
    answers as it stands; a captured one raises ``HoldNotActive``."""
    hold, _ = _locked_hold(session, customer_id, hold_id, kind)
    now = now or utcnow()
    if hold.status in ("released", "expired"):
        return HoldOutcome(hold, replayed=True)
    if hold.status == "active" and hold.expires_at is not None and hold.expires_at <= now:
        # Past its expiry: what the task would do, and the answer a release wants anyway.
        _expire(session, [(customer_id, hold.currency)], now, limit=None)
        return HoldOutcome(_row(session, customer_id, hold_id), replayed=True)
    _require_active(hold, now, "released")
    closed = close_hold(session, hold, "released", actor, now)
    commit_hooks.wallet_changed(session, customer_id, hold.currency)
    return HoldOutcome(closed)


def _require_active(hold: WalletHold, now: datetime, action: str) -> None:
    if hold.status != "active":
        raise HoldNotActive(hold.hold_id, hold.status, action)
    if hold.expires_at is not None and hold.expires_at <= now:
        raise HoldNotActive(hold.hold_id, "expired", action)


def close_hold(
    session: Session,
    hold: WalletHold,
    status: str,
    actor: str,
    now: datetime,
    *,
    captured_amount: int = 0,
    entry_id: str | None = None,
) -> WalletHold:
    """Move the active ``hold`` to ``status``; the hold as it is now (detached)."""
    table = WalletHold.__table__
    row = session.execute(
        update(table)
        .where(
            table.c.customer_id == hold.customer_id,
            table.c.hold_id == hold.hold_id,
            table.c.status == "active",
        )
        .values(
            status=status,
            captured_amount=captured_amount,
            entry_id=entry_id,
            closed_at=now,
            closed_by=actor,
        )
        .returning(*table.c)
    ).first()
    # The wallet is locked and the hold was read active under that lock.
    if row is None:
        raise AssertionError(f"hold {hold.hold_id} changed under its wallet's lock")
    return transient(WalletHold, dict(row._mapping))


# -- expiry --------------------------------------------------------------------------------


def _expire(
    session: Session, wallets: list[tuple[str, str]], now: datetime, *, limit: int | None
) -> list[dict[str, Any]]:
    """Expire the active holds of ``wallets`` (already locked) past their expiry; one
    ``wallet.hold_expired`` each. Returns the holds expired."""
    table = WalletHold.__table__
    customers = sorted({w[0] for w in wallets})
    candidates = session.execute(
        select(table.c.customer_id, table.c.currency, table.c.hold_id)
        .where(
            table.c.status == "active",
            table.c.expires_at.is_not(None),
            table.c.expires_at <= now,
            table.c.customer_id.in_(customers),
        )
        .order_by(table.c.expires_at)
        .limit(limit)
    ).all()
    wanted = set(wallets)
    ids = [(c, h) for c, cur, h in candidates if (c, cur) in wanted]
    expired: list[dict[str, Any]] = []
    for customer_id, hold_id in ids:
        row = session.execute(
            update(table)
            .where(
                table.c.customer_id == customer_id,
                table.c.hold_id == hold_id,
                table.c.status == "active",
                table.c.expires_at <= now,
            )
            .values(status="expired", closed_at=now, closed_by="system")
            .returning(*table.c)
        ).first()
        if row is None:
            continue
        hold = dict(row._mapping)
        expired.append(hold)
        enqueue_event(session, "wallet.hold_expired", hold_event_data(hold))
        commit_hooks.wallet_changed(session, customer_id, hold["currency"])
    return expired


def expire_holds(
    session: Session, *, limit: int = EXPIRY_BATCH, now: datetime | None = None
) -> tuple[int, int]:
    """Expire up to ``limit`` holds past their expiry, in the caller's transaction, each with
    its ``wallet.hold_expired`` notice; (holds selected, holds expired). Each wallet is
    locked first, so a capture racing the expiry either commits before (the hold is captured
    and stays so) or finds it expired."""
    now = now or utcnow()
    table = WalletHold.__table__
    due = session.execute(
        select(table.c.customer_id, table.c.currency)
        .where(
            table.c.status == "active",
            table.c.expires_at.is_not(None),
            table.c.expires_at <= now,
        )
        .order_by(table.c.expires_at)
        .limit(limit)
    ).all()
    if not due:
        return 0, 0
    wallets = sorted({(r.customer_id, r.currency) for r in due})
    lock_wallets(session, wallets)
    return len(due), len(_expire(session, wallets, now, limit=limit))


def held_total(session: Session, customer_id: str, currency: str) -> int:
    """Σ of the wallet's active holds, summed (``wallets.held`` is the kept copy)."""
    return int(
        session.scalar(
            select(func.coalesce(func.sum(WalletHold.amount), 0)).where(
                WalletHold.customer_id == customer_id,
                WalletHold.currency == currency,
                WalletHold.status == "active",
            )
        )
        or 0
    )


def hold_event_data(hold: Any) -> dict[str, Any]:
    """A hold as notifications carry it (a row mapping or a ``WalletHold``)."""
    get = hold.get if isinstance(hold, dict) else lambda name: getattr(hold, name)
    expires_at = get("expires_at")
    return {
        "payload_type": "WalletHold",
        "customer_id": get("customer_id"),
        "currency": get("currency"),
        "hold_id": get("hold_id"),
        "kind": get("kind"),
        "status": get("status"),
        "amount": get("amount"),
        "captured_amount": get("captured_amount"),
        "reason": get("reason"),
        "expires_at": iso(expires_at) if expires_at else None,
    }
