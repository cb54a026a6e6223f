"""The wallet ledger: customers, wallets and append-only credit/debit entries.

Plain functions over a SQLAlchemy ``Session``. They never commit: the caller owns the
transaction (``with transaction() as session:``), so a ledger change and whatever caused it
(an inbox row, a usage batch, an outbox message) commit or roll back together.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import bindparam, func, insert, select, text, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, configure_mappers
from sqlalchemy.orm.attributes import instance_state, set_committed_value

from worker import notify
from worker.config import Settings
from worker.errors import (
    CustomerNotFound,
    DuplicateEntry,
    IdempotencyKeyReused,
    InsufficientBalance,
    InvalidAmount,
    UnsupportedCurrency,
    ValidationFailed,
)
from worker.infra.db import autocommit_first, get_engine, settings_of
from worker.infra.metrics import LEDGER_ENTRIES
from worker.infra.sql import insert_ignore
from worker.models import LEDGER_EVENT_TYPES, Customer, LedgerEntry, Wallet, new_id, utcnow
from worker.money import MAX_AMOUNT, floor_cents, to_usd_cents
from worker.notify import commit_hooks
from worker.notify.lowbalance import WalletState

MAX_PAGE_SIZE = 100


@dataclass(frozen=True)
class Posted:
    """The result of a posted entry: the wallet after it, and the entry itself."""

    wallet: Wallet
    entry: LedgerEntry
    # The wallet's low-balance inputs as the posting read them (PostgreSQL's fast path).
    state: WalletState | None = None


# -- validation ----------------------------------------------------------------------------


def validate_amount(value: Any, field: str = "amount") -> int:
    """A positive integer number of minor units, at most 2**53 - 1; never a float or bool."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidAmount(
            f"must be an integer number of minor units, got {type(value).__name__}", field
        )
    if value <= 0:
        raise InvalidAmount("must be greater than 0", field)
    if value > MAX_AMOUNT:
        raise InvalidAmount(f"must be at most {MAX_AMOUNT}", field)
    return value


def validate_currency(session: Session, value: Any, field: str = "currency") -> str:
    supported = settings_of(session).wallet_currencies
    if not isinstance(value, str) or value.upper() not in supported:
        raise UnsupportedCurrency(value, supported, field)
    return value.upper()


def validate_page(page_number: Any, page_size: Any) -> tuple[int, int]:
    for field, value, low, high in (
        ("page_number", page_number, 0, None),
        ("page_size", page_size, 1, MAX_PAGE_SIZE),
    ):
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or value < low
            or (high is not None and value > high)
        ):
            bound = f"between {low} and {high}" if high else f"at least {low}"
            raise ValidationFailed(field, f"must be an integer {bound}")
    return page_number, page_size


# -- customers -----------------------------------------------------------------------------


def create_customer(
    session: Session,
    *,
    email: str,
    name: str,
    phone_number: str | None = None,
    metadata: dict[str, Any] | None = None,
    customer_id: str | None = None,
) -> tuple[Customer, bool]:
    """Create a customer and one zero-balance wallet per configured currency.

    Returns ``(customer, created)``. An email already on file (case-insensitively) returns the
    existing customer with ``created=False``: one customer per email, even under a race.
    """
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


def update_customer(session: Session, customer_id: str, **changes: Any) -> Customer:
    """Change a customer's name, phone number, metadata or threshold overrides."""
    unknown = set(changes) - _UPDATABLE
    if unknown:
        raise ValidationFailed(sorted(unknown)[0], "cannot be changed")
    customer = get_customer(session, customer_id)
    for key, value in changes.items():
        setattr(customer, "metadata_" if key == "metadata" else key, value)
    session.flush()
    return customer


# -- wallets -------------------------------------------------------------------------------


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


def get_wallets(session: Session, customer_id: str) -> list[Wallet]:
    """The customer's wallets, one per configured currency, in configuration order."""
    currencies = settings_of(session).wallet_currencies
    wallets = _wallets_of(session, customer_id)
    if {w.currency for w in wallets} < set(currencies):
        get_customer(session, customer_id)
        ensure_wallets(session, customer_id)
        wallets = _wallets_of(session, customer_id)
    elif not wallets:
        raise CustomerNotFound(customer_id)
    order = {c: i for i, c in enumerate(currencies)}
    return sorted((w for w in wallets if w.currency in order), key=lambda w: order[w.currency])


def _wallets_of(session: Session, customer_id: str) -> list[Wallet]:
    return list(session.scalars(select(Wallet).where(Wallet.customer_id == customer_id)))


def get_wallet(session: Session, customer_id: str, currency: str) -> Wallet:
    currency = validate_currency(session, currency)
    for wallet in get_wallets(session, customer_id):
        if wallet.currency == currency:
            return wallet
    raise CustomerNotFound(customer_id)  # unreachable: get_wallets covers every currency


def total_balance_usd(session: Session, wallets: list[Wallet]) -> int:
    """Sum of the wallets in USD cents at the configured rates, rounded down once."""
    rates = settings_of(session).fx_rates_to_usd
    total = sum(
        (
            to_usd_cents(w.balance, w.currency, rates[w.currency])
            for w in wallets
            if w.currency in rates
        ),
        start=to_usd_cents(0, "USD", rates["USD"]),
    )
    return floor_cents(total)


# -- entries -------------------------------------------------------------------------------


def fingerprint(
    *,
    currency: str,
    amount: int,
    is_credit: bool,
    event_type: str,
    reason: str | None,
    reference_object_id: str | None,
) -> str:
    """What a retry must repeat exactly for its idempotency key to mean "the same request"."""
    canonical = json.dumps(
        [currency, amount, is_credit, event_type, reason, reference_object_id],
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _entry_params(
    currency: str,
    amount: int,
    is_credit: bool,
    event_type: str,
    reason: str | None,
    reference_object_id: str | None,
) -> dict[str, Any]:
    """What an entry's caller chooses: the fingerprint's inputs (a key's reuse is judged on
    them) and the columns the caller sets."""
    return {
        "currency": currency,
        "amount": amount,
        "is_credit": is_credit,
        "event_type": event_type,
        "reason": reason,
        "reference_object_id": reference_object_id,
    }


def post_entry(
    session: Session,
    *,
    customer_id: str,
    currency: str,
    amount: int,
    is_credit: bool,
    event_type: str = "merchant_adjustment",
    reason: str | None = None,
    idempotency_key: str | None = None,
    reference_object_id: str | None = None,
    savepoint: bool = True,
) -> Posted:
    """Apply one credit or debit and record it. Never commits.

    Raises ``InsufficientBalance`` (nothing written, the key stays unused),
    ``DuplicateEntry`` (same key, same parameters: the original stands) or
    ``IdempotencyKeyReused`` (same key, different parameters).

    ``savepoint=False`` saves a keyed entry's SAVEPOINT and RELEASE round trips, for a caller
    whose transaction holds nothing but this entry: a concurrent request that wins the race
    for the same key then surfaces as ``IntegrityError`` with the transaction aborted, and the
    caller must roll back and call again in a new transaction, which answers
    ``DuplicateEntry`` or ``IdempotencyKeyReused`` as usual.
    """
    amount = validate_amount(amount)
    currency = validate_currency(session, currency)
    if event_type not in LEDGER_EVENT_TYPES:
        raise ValidationFailed("event_type", f"must be one of {', '.join(LEDGER_EVENT_TYPES)}")
    if idempotency_key is not None and not idempotency_key:
        raise ValidationFailed("idempotency_key", "must not be empty")
    params = _entry_params(currency, amount, is_credit, event_type, reason, reference_object_id)
    if idempotency_key is not None and savepoint:
        try:
            # A concurrent request with the same key may commit between our check and our
            # insert; the unique index then rejects ours, and the savepoint lets us answer
            # with the winner instead of aborting the caller's transaction. A refused debit
            # rolls back to the savepoint too, so it never uses up its key.
            with session.begin_nested():
                return _apply(session, customer_id, idempotency_key, params)
        except IntegrityError:
            _raise_if_key_used(session, customer_id, idempotency_key, params)
            raise
    return _apply(session, customer_id, idempotency_key, params)


def debit_up_to(
    session: Session,
    *,
    customer_id: str,
    currency: str,
    amount: int,
    event_type: str,
    reason: str | None = None,
    idempotency_key: str | None = None,
    reference_object_id: str | None = None,
) -> Posted | None:
    """Debit ``min(balance, amount)``; None when the wallet is empty (nothing written).

    For debits that must not be refused because the thing they pay for already happened
    (usage, refunds of spent credit, wallet-first checkout). The wallet row is locked first
    (``FOR UPDATE``; SQLite's write lock already serialises) so the amount chosen here is the
    amount debited. The caller records any shortfall (``amount - posted.entry.amount``).
    """
    amount = validate_amount(amount)
    currency = validate_currency(session, currency)
    if idempotency_key is not None:
        existing = find_entry(session, customer_id, idempotency_key)
        if existing is not None:
            raise DuplicateEntry(_snapshot(existing))
    wallet = session.scalar(
        select(Wallet)
        .where(Wallet.customer_id == customer_id, Wallet.currency == currency)
        .with_for_update()
        .execution_options(populate_existing=True)
    ) or _wallet_or_create(session, customer_id, currency)
    applied = min(wallet.balance, amount)
    if applied == 0:
        return None
    return post_entry(
        session,
        customer_id=customer_id,
        currency=currency,
        amount=applied,
        is_credit=False,
        event_type=event_type,
        reason=reason,
        idempotency_key=idempotency_key,
        reference_object_id=reference_object_id,
    )


def _apply(
    session: Session, customer_id: str, idempotency_key: str | None, params: dict[str, Any]
) -> Posted:
    if session.get_bind().dialect.name == "postgresql":
        posted = _apply_postgresql(session, customer_id, idempotency_key, params)
        if posted is not None:
            commit_hooks.entry_posted(session, posted.entry, posted.state)
            return posted
    # The general path (SQLite, and PostgreSQL's rare cases: a used key, a refused debit, a
    # wallet not created yet): check the key, then move the balance and insert the entry.
    if idempotency_key is not None:
        _raise_if_key_used(session, customer_id, idempotency_key, params)
    delta = params["amount"] if params["is_credit"] else -params["amount"]
    wallet = _move_balance(session, customer_id, params["currency"], delta)
    if wallet is None:
        current = _wallet_or_create(session, customer_id, params["currency"])
        if delta < 0:
            if current.balance + delta < 0:
                raise InsufficientBalance(
                    balance=current.balance,
                    requested=params["amount"],
                    currency=params["currency"],
                )
        elif current.balance + delta > MAX_AMOUNT:
            raise InvalidAmount(f"would take the {params['currency']} balance above {MAX_AMOUNT}")
        wallet = _move_balance(session, customer_id, params["currency"], delta)
        if wallet is None:  # the wallet changed under us; report against its new balance
            current = session.get(Wallet, (customer_id, params["currency"]), populate_existing=True)
            if delta > 0:
                raise InvalidAmount(
                    f"would take the {params['currency']} balance above {MAX_AMOUNT}"
                )
            raise InsufficientBalance(
                balance=current.balance if current else 0,
                requested=params["amount"],
                currency=params["currency"],
            )
    entry = LedgerEntry(
        id=new_id("wle"),
        business_id=settings_of(session).business_id,
        customer_id=customer_id,
        before_balance=wallet.balance - delta,
        after_balance=wallet.balance,
        idempotency_key=idempotency_key,
        fingerprint=fingerprint(**params),
        created_at=wallet.updated_at,
        **params,
    )
    session.add(entry)
    session.flush()
    commit_hooks.entry_posted(session, entry)  # the low-balance check runs before commit
    return Posted(wallet=wallet, entry=entry)


# PostgreSQL's hot path: the balance change and the entry in ONE statement (one round trip,
# so the wallet's row lock is held only for that statement and the commit). The UPDATE is the
# same conditional UPDATE as _move_balance: under READ COMMITTED a concurrent writer waits on
# the row lock, then re-checks the WHERE against the committed balance. When it matches no row
# (wallet missing, funds short, balance cap, or the key already used) nothing is written and
# the general path works out which it was. NOT EXISTS only saves a round trip for fresh keys;
# the unique index still decides a race (see post_entry's savepoint).
_PG_POST_SQL = """
WITH w AS (
    UPDATE wallets SET balance = balance + %(delta)s, updated_at = %(now)s
    WHERE customer_id = %(customer_id)s AND currency = %(currency)s
      AND balance + %(delta)s >= 0 AND balance + %(delta)s <= {max_amount}{key_check}{alone}
    RETURNING balance, pending_usage_scaled, low_state, created_at, updated_at
), e AS (
    INSERT INTO ledger_entries (id, business_id, customer_id, currency, amount, is_credit,
        before_balance, after_balance, event_type, reason, reference_object_id,
        idempotency_key, fingerprint, created_at)
    SELECT %(id)s, %(business_id)s, %(customer_id)s, %(currency)s, %(amount)s, %(is_credit)s,
        w.balance - %(delta)s, w.balance, %(event_type)s, %(reason)s::text,
        %(reference_object_id)s::text, %(idempotency_key)s::text, %(fingerprint)s, %(now)s
    FROM w
    RETURNING seq
)
SELECT w.balance, w.pending_usage_scaled, w.low_state, w.created_at, e.seq,
    (SELECT low_balance_thresholds FROM customers WHERE customer_id = %(customer_id)s)
FROM w, e
"""
_PG_KEY_CHECK = """
      AND NOT EXISTS (SELECT 1 FROM ledger_entries WHERE customer_id = %(customer_id)s
                      AND idempotency_key = %(idempotency_key)s)"""
# post_alone's extra condition: the entry leaves the wallet's low-balance state right (what
# lowbalance.may_disagree judges in Python before a commit), judged with the configured
# threshold, so only for customers without overrides of their own.
_PG_ALONE_CHECK = """
      AND (SELECT coalesce(json_typeof(low_balance_thresholds), 'null') FROM customers
           WHERE customer_id = %(customer_id)s) = 'null'
      AND (%(threshold)s::bigint IS NULL OR low_state =
           CASE WHEN balance + %(delta)s < %(threshold)s::bigint THEN 'low' ELSE 'normal' END)"""


def _pg_post(keyed: bool, alone: bool = False) -> str:
    return _PG_POST_SQL.format(
        max_amount=MAX_AMOUNT,
        key_check=_PG_KEY_CHECK if keyed else "",
        alone=_PG_ALONE_CHECK if alone else "",
    )


_PG_POST = _pg_post(keyed=False)
_PG_POST_KEYED = _pg_post(keyed=True)
_PG_POST_ALONE = {keyed: _pg_post(keyed, alone=True) for keyed in (False, True)}


def _pg_params(
    settings: Settings, customer_id: str, idempotency_key: str | None, params: dict[str, Any]
) -> dict[str, Any]:
    """The post statement's parameters; what the core computes in Python."""
    return {
        **params,
        "customer_id": customer_id,
        "delta": params["amount"] if params["is_credit"] else -params["amount"],
        "now": utcnow(),
        "id": new_id("wle"),
        "business_id": settings.business_id,
        "idempotency_key": idempotency_key,
        "fingerprint": fingerprint(**params),
    }


def _pg_posted(
    row: Any, values: dict[str, Any], make: Callable[..., Any]
) -> tuple[Wallet, LedgerEntry, WalletState]:
    """The wallet and entry the post statement wrote (built by ``make(cls, key, **values)``),
    and the wallet's low-balance inputs, from its result row and parameters."""
    balance, pending_usage_scaled, low_state, created_at, seq, thresholds = row
    customer_id, currency, delta = values["customer_id"], values["currency"], values["delta"]
    wallet = make(
        Wallet,
        (customer_id, currency),
        customer_id=customer_id,
        currency=currency,
        balance=balance,
        pending_usage_scaled=pending_usage_scaled,
        low_state=low_state,
        created_at=created_at,
        updated_at=values["now"],
    )
    entry = make(
        LedgerEntry,
        (seq,),
        seq=seq,
        before_balance=balance - delta,
        after_balance=balance,
        created_at=values["now"],
        **{name: values[name] for name in _ENTRY_PARAMS},
    )
    return wallet, entry, WalletState(customer_id, currency, balance, low_state, thresholds)


_ENTRY_PARAMS = (
    "id",
    "business_id",
    "customer_id",
    "currency",
    "amount",
    "is_credit",
    "event_type",
    "reason",
    "reference_object_id",
    "idempotency_key",
    "fingerprint",
)


def _apply_postgresql(
    session: Session, customer_id: str, idempotency_key: str | None, params: dict[str, Any]
) -> Posted | None:
    session.flush()  # the caller's pending changes go first, as autoflush would do
    values = _pg_params(settings_of(session), customer_id, idempotency_key, params)
    sql = _PG_POST if idempotency_key is None else _PG_POST_KEYED
    row = session.connection().exec_driver_sql(sql, values).first()
    if row is None:
        return None
    wallet, entry, state = _pg_posted(
        row, values, lambda cls, key, **kw: _committed(session, cls, key, **kw)
    )
    return Posted(wallet=wallet, entry=entry, state=state)


def post_alone(
    settings: Settings,
    *,
    customer_id: str,
    currency: str,
    amount: int,
    is_credit: bool,
    event_type: str = "merchant_adjustment",
    reason: str | None = None,
    idempotency_key: str | None = None,
    reference_object_id: str | None = None,
) -> Posted | None:
    """Post one entry as a transaction of its own, in ONE autocommitted statement; or return
    None, having written nothing, and the caller uses ``post_entry`` in a transaction (which
    also says why: funds short, key used, no wallet yet, bad input, ...). Database errors
    other than a lost race for the key are raised (``OperationalError`` and the like).

    PostgreSQL runs a single statement atomically, so the wallet update and the entry commit
    together with no BEGIN or COMMIT: a third of the statements, the row lock held for one
    statement, and none of the Session's work. The statement commits only when nothing else
    has to commit with the entry: the wallet's low-balance state stays right (a crossing needs
    ``reconcile`` in the transaction), the customer has no threshold overrides, and no one
    subscribes to ``wallet.ledger_entry.created`` (its outbox row commits with the entry).
    The wallet and entry returned are detached. SQLite always returns None.
    """
    engine = get_engine(settings)
    if (
        engine.dialect.name != "postgresql"
        or isinstance(amount, bool)
        or not isinstance(amount, int)
        or not 0 < amount <= MAX_AMOUNT
        or currency not in settings.wallet_currencies
        or event_type not in LEDGER_EVENT_TYPES
        or idempotency_key == ""
        or notify.wants(settings, "wallet.ledger_entry.created")
    ):
        return None
    params = _entry_params(currency, amount, is_credit, event_type, reason, reference_object_id)
    values = _pg_params(settings, customer_id, idempotency_key, params)
    values["threshold"] = settings.low_balance_threshold_map.get(currency)
    try:
        row = autocommit_first(settings, _PG_POST_ALONE[idempotency_key is not None], values)
    except IntegrityError:
        # A lost race for the key: the statement failed, nothing was written, and the
        # caller's transaction finds the key used and answers for it.
        return None
    # Any other error propagates. A connection lost after the statement was sent leaves its
    # outcome unknown (the server may have committed), so posting again here could post
    # twice; the caller's answer (a 503) lets the client retry with its idempotency key.
    if row is None:
        return None
    wallet, entry, state = _pg_posted(row, values, lambda cls, key, **kw: _transient(cls, kw))
    LEDGER_ENTRIES.labels(direction="credit" if is_credit else "debit", event_type=event_type).inc()
    return Posted(wallet=wallet, entry=entry, state=state)


def _committed(session: Session, cls: type[Any], key: tuple[Any, ...], **values: Any) -> Any:
    """The session's object for a row just written by SQL, holding ``values`` as clean state.

    Callers get the same session-bound objects the ORM would give them (a wallet already
    loaded in this session is updated in place), without another round trip.
    """
    mapper = cls.__mapper__
    if not mapper.configured:  # new_instance() skips the init hook that would configure it
        configure_mappers()
    identity = mapper.identity_key_from_primary_key(key)
    existing = session.identity_map.get(identity)
    if existing is not None:
        for name, value in values.items():
            set_committed_value(existing, name, value)
        return existing
    # What the ORM does when it loads a row: a new instance whose state holds the values as
    # committed (no history, nothing to flush), keyed by its identity, attached as persistent.
    obj = mapper.class_manager.new_instance()
    state = instance_state(obj)
    state.dict.update(values)
    state.key = identity
    session.add(obj)
    return obj


def _move_balance(session: Session, customer_id: str, currency: str, delta: int) -> Wallet | None:
    # A conditional UPDATE ... RETURNING rather than SELECT ... FOR UPDATE: one round trip, and
    # the row lock it takes is held to commit. Under READ COMMITTED a concurrent writer waits on
    # that lock and then re-evaluates the WHERE against the committed balance, so two debits can
    # never both pass on the same funds. The CHECK constraints stand behind it.
    new_balance = Wallet.balance + delta
    return session.scalar(
        update(Wallet)
        .where(
            Wallet.customer_id == customer_id,
            Wallet.currency == currency,
            new_balance >= 0,
            new_balance <= MAX_AMOUNT,
        )
        .values(balance=new_balance, updated_at=utcnow())
        .returning(Wallet),
        execution_options={"synchronize_session": False, "populate_existing": True},
    )


def _wallet_or_create(session: Session, customer_id: str, currency: str) -> Wallet:
    wallet = session.get(Wallet, (customer_id, currency), populate_existing=True)
    if wallet is None:
        get_customer(session, customer_id)
        ensure_wallets(session, customer_id)  # a currency configured after the customer
        wallet = session.get(Wallet, (customer_id, currency), populate_existing=True)
    return wallet


def _raise_if_key_used(
    session: Session, customer_id: str, key: str, params: dict[str, Any]
) -> None:
    original = session.scalar(
        select(LedgerEntry).where(
            LedgerEntry.customer_id == customer_id, LedgerEntry.idempotency_key == key
        )
    )
    if original is None:
        return
    # The caller's transaction usually rolls back on these errors, which would expire a
    # session-bound entry and leave the error's ``entry`` unreadable; hand out a detached copy.
    original = _snapshot(original)
    if original.fingerprint == fingerprint(**params):
        raise DuplicateEntry(original)
    differing = [
        "entry_type" if name == "is_credit" else name
        for name, value in params.items()
        if getattr(original, name) != value
    ]
    raise IdempotencyKeyReused(key, differing or ["parameters"], original)


def _snapshot(entry: LedgerEntry) -> LedgerEntry:
    """A transient copy of ``entry`` that stays readable after its session rolls back."""
    return LedgerEntry(
        **{attr.key: getattr(entry, attr.key) for attr in LedgerEntry.__mapper__.column_attrs}
    )


def find_entry(session: Session, customer_id: str, idempotency_key: str) -> LedgerEntry | None:
    return session.scalar(
        select(LedgerEntry).where(
            LedgerEntry.customer_id == customer_id,
            LedgerEntry.idempotency_key == idempotency_key,
        )
    )


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


# -- verification --------------------------------------------------------------------------


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
    negative = session.execute(
        select(Wallet.customer_id, Wallet.currency, Wallet.balance).where(Wallet.balance < 0)
    )
    problems += [
        f"wallet {r.customer_id}/{r.currency}: negative balance {r.balance}" for r in negative
    ]
    return VerifyReport(wallets=wallets, entries=entries, problems=problems)


# -- bulk debits ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BulkDebit:
    customer_id: str
    currency: str
    amount: int
    idempotency_key: str
    reason: str | None = None


@dataclass(frozen=True)
class BulkPosted:
    entry_id: str
    amount: int  # what was applied: min(balance, requested)
    after_balance: int


class LockedWallet(NamedTuple):
    """A wallet row as ``lock_wallets`` read it, under this transaction's row lock."""

    customer_id: str
    currency: str
    balance: int
    pending_usage_scaled: int
    low_state: str
    low_balance_thresholds: Any  # the customer's overrides (JSON), or None


def lock_wallets(
    session: Session, keys: list[tuple[str, str]]
) -> dict[tuple[str, str], LockedWallet]:
    """Lock the wallets ``keys`` (``(customer_id, currency)``) in one statement, in key order.

    One fixed order for every caller means two transactions whose batches share wallets queue
    on each other instead of deadlocking. A wallet that does not exist yet (a currency
    configured after its customer was created) is created first. Returns plain rows, not ORM
    objects: a batch of a thousand wallets costs one statement and no identity-map work.
    """
    keys = sorted(set(keys))

    def fetch() -> dict[tuple[str, str], LockedWallet]:
        rows = session.execute(
            select(
                Wallet.customer_id,
                Wallet.currency,
                Wallet.balance,
                Wallet.pending_usage_scaled,
                Wallet.low_state,
                Customer.low_balance_thresholds,
            )
            .join(Customer, Customer.customer_id == Wallet.customer_id)
            .where(tuple_(Wallet.customer_id, Wallet.currency).in_(keys))
            .order_by(Wallet.customer_id, Wallet.currency)
            .with_for_update(of=Wallet)
        )
        return {(r[0], r[1]): LockedWallet(*r) for r in rows}

    if not keys:
        return {}
    locked = fetch()
    missing = sorted({k[0] for k in keys if k not in locked})
    if missing:
        for customer_id in missing:
            get_customer(session, customer_id)
            ensure_wallets(session, customer_id)
        locked = fetch()
    return locked


# PostgreSQL: every wallet's debit and entry of a batch in ONE statement, the rows travelling
# as one array per column (constant statement text: PostgreSQL and SQLAlchemy cache it, where
# a VALUES list or an executemany would be compiled or sent row by row). The key check is part
# of the statement: when any key was used before, ``dup`` names it and neither the UPDATE nor
# the INSERT writes a row (all parts of a statement see the same snapshot). A concurrent
# transaction inserting the same key at the same moment still loses on the unique index.
_PG_BULK_DEBIT = text("""
WITH v AS (
    SELECT * FROM unnest(
        CAST(:customers AS text[]), CAST(:currencies AS text[]), CAST(:amounts AS bigint[]),
        CAST(:befores AS bigint[]), CAST(:ids AS text[]), CAST(:keys AS text[]),
        CAST(:reasons AS text[]), CAST(:fingerprints AS text[])
    ) AS v(customer_id, currency, amount, before_balance, id, idempotency_key, reason,
           fingerprint)
), dup AS (
    SELECT l.seq FROM ledger_entries l
    JOIN unnest(CAST(:key_customers AS text[]), CAST(:all_keys AS text[]))
         AS k(customer_id, key)
      ON l.customer_id = k.customer_id AND l.idempotency_key = k.key
    LIMIT 1
), w AS (
    UPDATE wallets SET balance = wallets.balance - v.amount, updated_at = :now
    FROM v
    WHERE wallets.customer_id = v.customer_id AND wallets.currency = v.currency
      AND NOT EXISTS (SELECT 1 FROM dup)
    RETURNING 1
), e AS (
    INSERT INTO ledger_entries (id, business_id, customer_id, currency, amount, is_credit,
        before_balance, after_balance, event_type, reason, reference_object_id,
        idempotency_key, fingerprint, created_at)
    SELECT v.id, :business_id, v.customer_id, v.currency, v.amount, false,
        v.before_balance, v.before_balance - v.amount, :event_type, v.reason, NULL,
        v.idempotency_key, v.fingerprint, :now
    FROM v WHERE NOT EXISTS (SELECT 1 FROM dup)
    RETURNING 1
)
SELECT (SELECT seq FROM dup), (SELECT count(*) FROM w), (SELECT count(*) FROM e)
""")


def debit_many_up_to(
    session: Session,
    debits: list[BulkDebit],
    *,
    event_type: str,
    locked: dict[tuple[str, str], LockedWallet] | None = None,
) -> dict[tuple[str, str], BulkPosted]:
    """``debit_up_to`` for many wallets at once (usage batches): a few statements, not 7 each.

    Same rules: each debit takes ``min(balance, amount)`` and records it as one entry; a wallet
    at 0 gets no entry (absent from the result). The wallets are locked (``lock_wallets``: one
    ``SELECT ... FOR UPDATE`` in key order, so concurrent batches queue instead of
    deadlocking), which makes the balances read there the balances debited; the CHECK
    constraints stand behind it. ``locked``: the caller already locked these wallets with
    ``lock_wallets`` in this transaction (usage billing needs their remainders too), so they
    are not read again. Any idempotency key already used raises ``DuplicateEntry`` and writes
    nothing. At most one debit per wallet. Never commits.
    """
    if event_type not in LEDGER_EVENT_TYPES:
        raise ValidationFailed("event_type", f"must be one of {', '.join(LEDGER_EVENT_TYPES)}")
    if not debits:
        return {}
    keys = sorted((d.customer_id, validate_currency(session, d.currency)) for d in debits)
    if len(set(keys)) != len(keys):
        raise ValidationFailed("debits", "at most one debit per wallet")
    for d in debits:
        validate_amount(d.amount)
    postgres = session.get_bind().dialect.name == "postgresql"
    if not postgres:  # PostgreSQL checks the keys inside its one write statement
        _raise_if_any_key_used(session, debits)
    if locked is None or any(key not in locked for key in keys):
        locked = lock_wallets(session, keys)
    business_id = settings_of(session).business_id
    now = utcnow()
    entries: list[dict[str, Any]] = []
    posted: dict[tuple[str, str], BulkPosted] = {}
    for d in debits:
        key = (d.customer_id, d.currency.upper())
        before = locked[key].balance
        applied = min(before, d.amount)
        if applied == 0:
            continue
        params = {
            "currency": key[1],
            "amount": applied,
            "is_credit": False,
            "event_type": event_type,
            "reason": d.reason,
            "reference_object_id": None,
        }
        entry_id = new_id("wle")
        entries.append(
            {
                "id": entry_id,
                "business_id": business_id,
                "customer_id": d.customer_id,
                "before_balance": before,
                "after_balance": before - applied,
                "idempotency_key": d.idempotency_key,
                "fingerprint": fingerprint(**params),
                "created_at": now,
                **params,
            }
        )
        posted[key] = BulkPosted(entry_id, applied, before - applied)
    if not entries:
        if postgres:
            _raise_if_any_key_used(session, debits)
        return posted
    if postgres:
        _write_bulk_pg(session, entries, debits, business_id, event_type, now)
    else:
        wallets = Wallet.__table__
        session.execute(
            update(wallets)
            .where(
                wallets.c.customer_id == bindparam("b_customer"),
                wallets.c.currency == bindparam("b_currency"),
            )
            .values(balance=wallets.c.balance - bindparam("b_amount"), updated_at=now),
            [
                {"b_customer": e["customer_id"], "b_currency": e["currency"]}
                | {"b_amount": e["amount"]}
                for e in entries
            ],
        )
        session.execute(insert(LedgerEntry.__table__), entries)
    for values in entries:
        # A transient copy: the rows went in through Core, the hooks only read them.
        row = locked[(values["customer_id"], values["currency"])]
        state = WalletState(
            row.customer_id,
            row.currency,
            values["after_balance"],
            row.low_state,
            row.low_balance_thresholds,
        )
        commit_hooks.entry_posted(session, _transient(LedgerEntry, values), state)
    return posted


def _transient(cls: type[Any], values: dict[str, Any]) -> Any:
    """A detached ``cls`` holding ``values``, built without the ORM's per-attribute events.

    ``cls(**values)`` fires an attribute event per column, which for a batch's thousand
    entries cost as much as the rest of the batch's Python work; the hooks only read them.
    """
    mapper = cls.__mapper__
    if not mapper.configured:  # new_instance() skips the init hook that would configure it
        configure_mappers()
    obj = mapper.class_manager.new_instance()
    instance_state(obj).dict.update(values)
    return obj


def _write_bulk_pg(
    session: Session,
    entries: list[dict[str, Any]],
    debits: list[BulkDebit],
    business_id: str,
    event_type: str,
    now: datetime,
) -> None:
    dup, updated, inserted = session.execute(
        _PG_BULK_DEBIT,
        {
            "customers": [e["customer_id"] for e in entries],
            "currencies": [e["currency"] for e in entries],
            "amounts": [e["amount"] for e in entries],
            "befores": [e["before_balance"] for e in entries],
            "ids": [e["id"] for e in entries],
            "keys": [e["idempotency_key"] for e in entries],
            "reasons": [e["reason"] for e in entries],
            "fingerprints": [e["fingerprint"] for e in entries],
            # Every debit's key, also those of wallets at 0 that get no entry.
            "key_customers": [d.customer_id for d in debits],
            "all_keys": [d.idempotency_key for d in debits],
            "business_id": business_id,
            "event_type": event_type,
            "now": now,
        },
    ).one()
    if dup is not None:
        raise DuplicateEntry(_snapshot(session.get(LedgerEntry, dup)))
    if updated != len(entries) or inserted != len(entries):  # the wallets were locked above
        raise AssertionError(f"bulk debit wrote {updated} wallets and {inserted} entries")


def _raise_if_any_key_used(session: Session, debits: list[BulkDebit]) -> None:
    if not debits:
        return
    used = session.scalars(
        select(LedgerEntry).where(
            tuple_(LedgerEntry.customer_id, LedgerEntry.idempotency_key).in_(
                [(d.customer_id, d.idempotency_key) for d in debits]
            )
        )
    ).first()
    if used is not None:
        raise DuplicateEntry(used)
