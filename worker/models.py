"""The schema. Invariants live here as constraints; code checks first only for good errors.

The Alembic migrations under ``worker/migrations`` create exactly these tables; a test
compares the two.
"""

from __future__ import annotations

import secrets
import string
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")

LEDGER_EVENT_TYPES = (
    # The first seven are Dodo Payments' names, kept exactly.
    "payment",
    "payment_reversal",
    "refund",
    "refund_reversal",
    "dispute",
    "dispute_reversal",
    "merchant_adjustment",
    "usage",
    "expiration",
)

# Idempotency-key namespaces: what a client sends can never equal a key the system derives
# for its own effects (worker.ledger.keys).
KEY_SCOPES = ("client", "system")

# What a credit lot is: bought, or given (spent first among lots expiring together, and
# reported apart when it expires: finance recognises the two differently).
LOT_CATEGORIES = ("paid", "promotional")

_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str, length: int = 21) -> str:
    """``prefix_`` + a random base62 string (URL-safe, ~125 bits for the default length)."""
    # One urandom call instead of one per character (this runs once per ledger entry). Bytes
    # >= 248 are dropped so that ``byte % 62`` stays uniform (248 = 4 * 62).
    chars: list[str] = []
    while len(chars) < length:
        chars += [_ALPHABET[b % 62] for b in secrets.token_bytes(length + 4) if b < 248]
    return f"{prefix}_" + "".join(chars[:length])


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime; use UTC-aware datetimes")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


naming = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class Base(DeclarativeBase):
    metadata = naming
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, int: BigInteger}


class Customer(Base):
    __tablename__ = "customers"

    customer_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    business_id: Mapped[str] = mapped_column(String(64))
    email: Mapped[str] = mapped_column(String(320))
    # Lower-cased email: uniqueness is case-insensitive on every backend.
    email_normalized: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(500))
    phone_number: Mapped[str | None] = mapped_column(String(64))
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    # Per-customer low-balance threshold overrides, {"USD": 500}.
    low_balance_thresholds: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Who created it ("unknown" before actors were recorded) and who changed it last (None:
    # unchanged since); the audit log keeps every change.
    created_by: Mapped[str] = mapped_column(String(64), server_default="unknown")
    updated_by: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime | None] = mapped_column()

    __table_args__ = (
        # The scan visits customers with threshold overrides without reading every customer.
        Index(
            "ix_customers_threshold_overrides",
            "customer_id",
            postgresql_where=text("low_balance_thresholds IS NOT NULL"),
            sqlite_where=text("low_balance_thresholds IS NOT NULL"),
        ),
    )


class Wallet(Base):
    __tablename__ = "wallets"
    __table_args__ = (
        CheckConstraint("balance >= 0", name="balance_non_negative"),
        # Balances stay exact in JSON clients that read numbers as doubles (2**53 - 1).
        CheckConstraint("balance <= 9007199254740991", name="balance_json_safe"),
        CheckConstraint("pending_usage_scaled >= 0", name="pending_usage_non_negative"),
        CheckConstraint("low_state IN ('unarmed', 'normal', 'low')", name="low_state_valid"),
        # The sum of the wallet's active holds (worker.ledger.holds), kept by the holds'
        # trigger. No "held <= balance": an expiring credit lot is taken by its expiration
        # entry whether or not a hold covers it, which can leave held above the balance (the
        # available balance is then 0; a capture takes what the live lots still hold).
        CheckConstraint("held >= 0", name="held_non_negative"),
        # The low-balance scan walks only wallets whose balance is under some threshold.
        Index("ix_wallets_currency_balance", "currency", "balance"),
        # ...and, to find recoveries, only wallets currently in the "low" state.
        Index(
            "ix_wallets_low_currency_balance",
            "currency",
            "balance",
            postgresql_where=text("low_state = 'low'"),
            sqlite_where=text("low_state = 'low'"),
        ),
        # The low-balance scan also visits every wallet holding something: its available
        # balance (balance - held) may be under a threshold its balance is not.
        Index(
            "ix_wallets_held_currency",
            "currency",
            postgresql_where=text("held > 0"),
            sqlite_where=text("held > 0"),
        ),
    )

    customer_id: Mapped[str] = mapped_column(
        ForeignKey("customers.customer_id", ondelete="RESTRICT"), primary_key=True
    )
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    balance: Mapped[int] = mapped_column(BigInteger, default=0)
    # Accrued usage cost not yet debited, in units of 10**-12 minor units (always < 10**12).
    pending_usage_scaled: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # Low-balance edge detection: unarmed until the balance first reaches the threshold.
    low_state: Mapped[str] = mapped_column(String(10), default="unarmed", server_default="unarmed")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Σ amount of the wallet's active holds: maintained by the trigger on wallet_holds, in the
    # transaction that moves a hold, so the available balance (balance - held) is one read.
    held: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # Whether the available balance is 0 (wallet.depleted fires when it becomes true): a new
    # wallet starts empty, so depleted, and only a crossing from above 0 is announced.
    depleted: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())


class LedgerEntry(Base):
    __tablename__ = "ledger_entries"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("after_balance >= 0", name="after_balance_non_negative"),
        CheckConstraint(
            "(is_credit AND after_balance = before_balance + amount)"
            " OR (NOT is_credit AND after_balance = before_balance - amount)",
            name="balance_chain",
        ),
        CheckConstraint(
            "event_type IN (" + ", ".join(f"'{t}'" for t in LEDGER_EVENT_TYPES) + ")",
            name="event_type_valid",
        ),
        CheckConstraint(
            "key_scope IN (" + ", ".join(f"'{s}'" for s in KEY_SCOPES) + ")",
            name="key_scope_valid",
        ),
        UniqueConstraint("customer_id", "key_scope", "idempotency_key"),
        ForeignKeyConstraint(
            ["customer_id", "currency"],
            ["wallets.customer_id", "wallets.currency"],
            name="fk_ledger_entries_wallet",
        ),
        # On PostgreSQL it carries what a statement sums and a balance at a moment reads
        # (migration 0016), so walking a wallet's chain reads the index alone.
        Index(
            "ix_ledger_entries_wallet_seq",
            "customer_id",
            "currency",
            "seq",
            postgresql_include=["created_at", "is_credit", "amount", "event_type", "after_balance"],
        ),
        Index("ix_ledger_entries_customer_seq", "customer_id", "seq"),
        Index("ix_ledger_entries_reference", "reference_object_id"),
        # Reports (worker.reports, migration 0016). One wallet's entries by time, carrying
        # what the analytics buckets sum and the chain point a balance at a moment reads, so
        # PostgreSQL answers from the index alone (an index-only scan).
        Index(
            "ix_ledger_entries_wallet_created",
            "customer_id",
            "currency",
            "created_at",
            postgresql_include=["seq", "is_credit", "amount", "event_type", "after_balance"],
        ),
        # Expirations by time: the breakage report and the summary's expired figures read
        # only these (a small partial index; other entries are never in it).
        Index(
            "ix_ledger_entries_expirations",
            "created_at",
            postgresql_where=text("event_type = 'expiration'"),
            sqlite_where=text("event_type = 'expiration'"),
        ),
        # Every entry by time, with what the business summary sums.
        Index(
            "ix_ledger_entries_created",
            "created_at",
            postgresql_include=["currency", "is_credit", "event_type", "amount"],
        ),
    )

    # seq orders entries totally (created_at can tie); id is the public identifier.
    seq: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    business_id: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[str] = mapped_column(String(64))
    currency: Mapped[str] = mapped_column(String(3))
    amount: Mapped[int] = mapped_column(BigInteger)
    is_credit: Mapped[bool] = mapped_column(Boolean)
    before_balance: Mapped[int] = mapped_column(BigInteger)
    after_balance: Mapped[int] = mapped_column(BigInteger)
    event_type: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(Text)
    reference_object_id: Mapped[str | None] = mapped_column(String(255))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    # Whose key it is: "client" (sent through the API or CLI) or "system" (derived by the
    # system from a payment, refund, usage batch, ...). Unique per customer and scope.
    key_scope: Mapped[str] = mapped_column(String(6), default="client", server_default="client")
    # sha256 of the parameters that created the entry: a retry must match it.
    fingerprint: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Who posted it: an API key's id, webhook:dodo, webhook:stripe, usage, system or cli
    # ("unknown" for entries posted before actors were recorded).
    actor: Mapped[str] = mapped_column(String(64), server_default="unknown")


class CreditLot(Base):
    """The credit one credit entry brought, and how much of it is left to spend.

    A wallet's balance is the sum of its lots' ``remaining``. A lot is live (spendable) until
    ``expires_at``; after it, what remains waits, unspendable, for its ``expiration`` entry,
    which records it in ``expired`` and takes ``remaining`` to 0.
    """

    __tablename__ = "credit_lots"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("remaining >= 0", name="remaining_non_negative"),
        CheckConstraint("expired >= 0", name="expired_non_negative"),
        CheckConstraint("remaining + expired <= amount", name="within_amount"),
        CheckConstraint(
            "category IN (" + ", ".join(f"'{c}'" for c in LOT_CATEGORIES) + ")",
            name="category_valid",
        ),
        ForeignKeyConstraint(
            ["customer_id", "currency"],
            ["wallets.customer_id", "wallets.currency"],
            name="fk_credit_lots_wallet",
        ),
        # A debit reads its wallet's lots that still hold something in spending order
        # (worker.ledger.lots.spending_order), only as many as it needs.
        Index(
            "ix_credit_lots_spending",
            "customer_id",
            "currency",
            text("(expires_at IS NULL)"),
            "expires_at",
            text("category DESC"),
            "seq",
            postgresql_where=text("remaining > 0"),
            sqlite_where=text("remaining > 0"),
        ),
        # The expiry sweep walks only lots that still hold something and do expire.
        Index(
            "ix_credit_lots_expiring",
            "expires_at",
            postgresql_where=text("remaining > 0 AND expires_at IS NOT NULL"),
            sqlite_where=text("remaining > 0 AND expires_at IS NOT NULL"),
        ),
    )

    # seq orders lots by age (created_at ties within a posting); id is the public identifier.
    seq: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    customer_id: Mapped[str] = mapped_column(String(64))
    currency: Mapped[str] = mapped_column(String(3))
    # The credit entry that brought it; NULL for a wallet's opening lot (its balance when
    # lots were introduced, migration 0010).
    entry_id: Mapped[str | None] = mapped_column(ForeignKey("ledger_entries.id"), unique=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    remaining: Mapped[int] = mapped_column(BigInteger)
    expired: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    category: Mapped[str] = mapped_column(String(12), default="paid", server_default="paid")
    expires_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class LotConsumption(Base):
    """How much one debit entry took from one lot (a debit spanning lots has several)."""

    __tablename__ = "lot_consumptions"
    __table_args__ = (CheckConstraint("amount > 0", name="amount_positive"),)

    entry_id: Mapped[str] = mapped_column(ForeignKey("ledger_entries.id"), primary_key=True)
    lot_id: Mapped[str] = mapped_column(ForeignKey("credit_lots.id"), primary_key=True, index=True)
    amount: Mapped[int] = mapped_column(BigInteger)


class LotNotice(Base):
    """A notice sent about a lot before it expires: at most one per lot and kind. (The
    ``wallet.credits_expired`` notice needs none: it commits with the lot's one expiration
    entry.)"""

    __tablename__ = "lot_notices"
    __table_args__ = (CheckConstraint("kind IN ('expiring')", name="kind_valid"),)

    lot_id: Mapped[str] = mapped_column(ForeignKey("credit_lots.id"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(10), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class LedgerMarker(Base):
    """Named points in the ledger's history (``lots_from_seq``: the first entry whose lots
    are recorded; earlier debits consumed nothing that ``verify`` could check)."""

    __tablename__ = "ledger_markers"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)


HOLD_KINDS = ("hold", "dispute")
HOLD_STATUSES = ("active", "captured", "released", "expired")


class WalletHold(Base):
    """Money reserved on a wallet: not a ledger entry (the balance stays the ledger's), but
    subtracted from what debits may spend until it is captured (one debit entry), released or
    expired. A ``dispute`` hold reserves a disputed top-up's credit until the dispute ends
    and never expires.

    Its status moves only from ``active``, once (a trigger refuses anything else), and the
    same trigger keeps ``wallets.held`` equal to the sum of the wallet's active holds.
    """

    __tablename__ = "wallet_holds"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("captured_amount >= 0", name="captured_non_negative"),
        CheckConstraint("captured_amount <= amount", name="captured_within_amount"),
        CheckConstraint(
            "status = 'captured' OR captured_amount = 0", name="captured_only_when_captured"
        ),
        CheckConstraint(
            "status IN (" + ", ".join(f"'{s}'" for s in HOLD_STATUSES) + ")", name="status_valid"
        ),
        CheckConstraint(
            "kind IN (" + ", ".join(f"'{k}'" for k in HOLD_KINDS) + ")", name="kind_valid"
        ),
        # A hold expires; a dispute's lasts until the dispute ends.
        CheckConstraint("(kind = 'dispute') = (expires_at IS NULL)", name="expiry_by_kind"),
        CheckConstraint(
            "key_scope IN (" + ", ".join(f"'{s}'" for s in KEY_SCOPES) + ")",
            name="key_scope_valid",
        ),
        UniqueConstraint("customer_id", "key_scope", "idempotency_key"),
        ForeignKeyConstraint(
            ["customer_id", "currency"],
            ["wallets.customer_id", "wallets.currency"],
            name="fk_wallet_holds_wallet",
        ),
        # GET .../holds?status= lists a customer's holds newest first.
        Index("ix_wallet_holds_customer_created", "customer_id", "created_at"),
        # The expiry task and a wallet's lazy expiry walk only active holds that expire.
        Index(
            "ix_wallet_holds_expiring",
            "expires_at",
            postgresql_where=text("status = 'active' AND expires_at IS NOT NULL"),
            sqlite_where=text("status = 'active' AND expires_at IS NOT NULL"),
        ),
    )

    customer_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    hold_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3))
    kind: Mapped[str] = mapped_column(String(8), default="hold", server_default="hold")
    amount: Mapped[int] = mapped_column(BigInteger)
    captured_amount: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    status: Mapped[str] = mapped_column(String(10), default="active", server_default="active")
    reason: Mapped[str | None] = mapped_column(Text)
    # A dispute's payment (or the client's own reference for a hold).
    reference_object_id: Mapped[str | None] = mapped_column(String(255))
    # Client keys (the API, the CLI) and system keys (``dispute:{provider}:{id}``) apart, as
    # for ledger entries (worker.ledger.keys).
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    key_scope: Mapped[str] = mapped_column(String(6), default="client", server_default="client")
    # sha256 of the parameters that created it: a retry with the same key must match it.
    fingerprint: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime | None] = mapped_column()
    # The debit entry of its capture (same customer; no foreign key, which would name the
    # entry by its id alone).
    entry_id: Mapped[str | None] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column()
    closed_by: Mapped[str | None] = mapped_column(String(64))


DISPUTE_STATUSES = ("open", "lost", "won")


class TopupDispute(Base):
    """A provider's dispute (chargeback) of a top-up payment, and what it did to the wallet
    the payment credited: the hold it opened (``kind = 'dispute'``), and when it ended, the
    ``dispute`` debit entry that took the held credit (lost) or the hold's release (won).
    Every event of one dispute meets this row under the payment's lock, so each applies once,
    in any order."""

    __tablename__ = "topup_disputes"
    __table_args__ = (
        CheckConstraint("disputed_amount > 0", name="disputed_positive"),
        CheckConstraint("share >= 0", name="share_non_negative"),
        CheckConstraint("held >= 0 AND held <= share", name="held_within_share"),
        CheckConstraint("shortfall = share - held", name="shortfall_is_unheld_share"),
        CheckConstraint(
            "status IN (" + ", ".join(f"'{s}'" for s in DISPUTE_STATUSES) + ")",
            name="status_valid",
        ),
        ForeignKeyConstraint(
            ["customer_id", "currency"],
            ["wallets.customer_id", "wallets.currency"],
            name="fk_topup_disputes_wallet",
        ),
    )

    customer_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    provider: Mapped[str] = mapped_column(String(32), primary_key=True)
    dispute_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    payment_id: Mapped[str] = mapped_column(String(255))
    currency: Mapped[str] = mapped_column(String(3))  # the credited wallet's
    # As the provider sent it (the payment's currency, minor units).
    disputed_amount: Mapped[int] = mapped_column(BigInteger)
    # The disputed part of the credit: its proportion of what the payment credited, at most
    # what earlier refunds left of it; what was held of it, and what could not be.
    share: Mapped[int] = mapped_column(BigInteger)
    held: Mapped[int] = mapped_column(BigInteger)
    shortfall: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(8))
    hold_id: Mapped[str | None] = mapped_column(String(64))
    ledger_entry_id: Mapped[str | None] = mapped_column(String(64))
    closing_event: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column()


class ApiKey(Base):
    __tablename__ = "api_keys"
    __table_args__ = (CheckConstraint("max_credit > 0", name="max_credit_positive"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    # sha256 of the secret; the secret itself is shown once and never stored.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The largest single credit the key may post, in minor units of the credit's currency;
    # None: no limit beyond the credit scope.
    max_credit: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Actors ("unknown" for keys created before actors were recorded).
    created_by: Mapped[str] = mapped_column(String(64), server_default="unknown")
    revoked_at: Mapped[datetime | None] = mapped_column()
    revoked_by: Mapped[str | None] = mapped_column(String(64))


# worker.access.scopes.SCOPES; spelled out here so the CHECK is a constant of the schema.
API_KEY_SCOPES = ("read", "customers", "debit", "credit", "admin")


class ApiKeyScope(Base):
    """One scope an API key holds: a row per scope, so the database itself refuses an unknown
    scope (a portable CHECK) or a scope given twice (the primary key)."""

    __tablename__ = "api_key_scopes"
    __table_args__ = (
        CheckConstraint(
            "scope IN (" + ", ".join(f"'{s}'" for s in API_KEY_SCOPES) + ")", name="scope_valid"
        ),
    )

    key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"), primary_key=True)
    scope: Mapped[str] = mapped_column(String(16), primary_key=True)


class AuditLog(Base):
    """Operator actions, append-only: who (an API key id, bootstrap, cli, system) did what
    (``apikey.created``, ``task.triggered``, ...) to which target, and when."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(255))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class InboxEvent(Base):
    """A provider webhook, stored before it is acknowledged; processed exactly once."""

    __tablename__ = "inbox_events"
    __table_args__ = (
        UniqueConstraint("provider", "provider_event_id"),
        CheckConstraint(
            "status IN ('pending', 'processed', 'failed', 'ignored')", name="status_valid"
        ),
        Index("ix_inbox_events_status_received", "status", "received_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(String(32))
    provider_event_id: Mapped[str] = mapped_column(String(255))
    event_type: Mapped[str] = mapped_column(String(128))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column()


class UsageEvent(Base):
    """One metered event (Dodo's usage-event shape); billed exactly once."""

    __tablename__ = "usage_events"
    __table_args__ = (
        CheckConstraint(
            "status IN ('pending', 'processed', 'unbilled', 'unpriced', 'invalid')",
            name="status_valid",
        ),
        CheckConstraint("unbilled_amount >= 0", name="unbilled_non_negative"),
        # Only the statuses looked up by status, each a partial index (migration 0019): a
        # billed event leaves both, so billing writes no entry into them.
        Index(
            "ix_usage_events_pending",
            "seq",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
        Index(
            "ix_usage_events_unbilled",
            "customer_id",
            "currency",
            "seq",
            postgresql_where=text("status = 'unbilled'"),
            sqlite_where=text("status = 'unbilled'"),
        ),
        Index("ix_usage_events_customer_seq", "customer_id", "seq"),
        # Usage cost per meter over a period (worker.reports.analytics, migration 0016).
        Index("ix_usage_events_customer_timestamp", "customer_id", "timestamp"),
    )

    seq: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(255), unique=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.customer_id"))
    event_name: Mapped[str] = mapped_column(String(255))
    timestamp: Mapped[datetime] = mapped_column()
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    currency: Mapped[str | None] = mapped_column(String(3))
    # Exact cost in units of 10**-12 minor units (see Wallet.pending_usage_scaled).
    cost_scaled: Mapped[int | None] = mapped_column(BigInteger)
    # Whole minor units this event could not be debited for (insufficient balance).
    unbilled_amount: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    ledger_entry_id: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column()


class WalletCharge(Base):
    """Wallet-first checkout: the part of an order paid from the wallet."""

    __tablename__ = "wallet_charges"
    __table_args__ = (
        UniqueConstraint("customer_id", "key_scope", "idempotency_key"),
        CheckConstraint(
            "key_scope IN (" + ", ".join(f"'{s}'" for s in KEY_SCOPES) + ")",
            name="key_scope_valid",
        ),
        CheckConstraint("applied_amount >= 0", name="applied_non_negative"),
        CheckConstraint("reversed_amount >= 0", name="reversed_non_negative"),
        CheckConstraint("reversed_amount <= applied_amount", name="reversed_le_applied"),
        CheckConstraint("applied_amount <= requested_amount", name="applied_le_requested"),
    )

    charge_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.customer_id"))
    currency: Mapped[str] = mapped_column(String(3))
    order_id: Mapped[str] = mapped_column(String(255))
    idempotency_key: Mapped[str] = mapped_column(String(255))
    # "client" for a key the caller sent, "system" for the default ``charge:{order_id}``.
    key_scope: Mapped[str] = mapped_column(String(6), default="client", server_default="client")
    requested_amount: Mapped[int] = mapped_column(BigInteger)
    applied_amount: Mapped[int] = mapped_column(BigInteger)
    reversed_amount: Mapped[int] = mapped_column(BigInteger, default=0)
    # What the caller asked for: a retry with the same key must ask for the same thing.
    allow_partial: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    ledger_entry_id: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Who charged ("unknown" before actors were recorded); reversals carry theirs on entries.
    actor: Mapped[str] = mapped_column(String(64), server_default="unknown")


class WebhookEndpoint(Base):
    """A merchant URL that receives signed notifications."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    secret: Mapped[str] = mapped_column(String(255))
    # Comma-separated event types, or "*" for all.
    events: Mapped[str] = mapped_column(Text, default="*")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class OutboxMessage(Base):
    """A notification written in the same transaction as the change that caused it."""

    __tablename__ = "outbox_messages"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'delivered', 'failed')", name="status_valid"),
        Index("ix_outbox_messages_status_next", "status", "next_attempt_at"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the webhook-id
    endpoint_id: Mapped[str | None] = mapped_column(String(64))  # None: NOTIFY_WEBHOOK_URL
    channel: Mapped[str] = mapped_column(String(16), default="webhook")
    event_type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column()


class DeliveryAttempt(Base):
    __tablename__ = "delivery_attempts"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(ForeignKey("outbox_messages.id"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TopupPayment(Base):
    """A provider payment seen by the inbox, and what it credited (0: not a wallet top-up).

    Refunds find their payment here: the share to reverse is proportional to the payment, and
    ``reversed_amount`` caps the sum of reversals at what the payment credited.
    """

    __tablename__ = "topup_payments"
    __table_args__ = (
        UniqueConstraint("provider", "payment_id"),
        CheckConstraint("credited_amount >= 0", name="credited_non_negative"),
        CheckConstraint("payment_amount >= 0", name="payment_amount_non_negative"),
        CheckConstraint("reversed_amount >= 0", name="reversed_non_negative"),
        CheckConstraint("reversed_amount <= credited_amount", name="reversed_le_credited"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(String(32))
    payment_id: Mapped[str] = mapped_column(String(255))
    customer_id: Mapped[str | None] = mapped_column(String(64))
    currency: Mapped[str | None] = mapped_column(String(3))  # the credited wallet's currency
    credited_amount: Mapped[int] = mapped_column(BigInteger)
    payment_amount: Mapped[int] = mapped_column(BigInteger)
    payment_currency: Mapped[str] = mapped_column(String(3))
    reversed_amount: Mapped[int] = mapped_column(BigInteger, default=0)
    ledger_entry_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TopupRefund(Base):
    """One provider refund of a top-up payment, applied once: the share reversed and any
    shortfall the wallet could not cover."""

    __tablename__ = "topup_refunds"
    __table_args__ = (
        UniqueConstraint("provider", "refund_id"),
        CheckConstraint("refund_amount >= 0", name="refund_amount_non_negative"),
        CheckConstraint("share >= 0", name="share_non_negative"),
        CheckConstraint("debited >= 0 AND shortfall >= 0", name="parts_non_negative"),
        CheckConstraint("debited + shortfall = share", name="parts_sum"),
        Index("ix_topup_refunds_provider_payment", "provider", "payment_id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(String(32))
    refund_id: Mapped[str] = mapped_column(String(255))
    payment_id: Mapped[str] = mapped_column(String(255))
    refund_amount: Mapped[int] = mapped_column(BigInteger)  # in the payment's currency
    share: Mapped[int] = mapped_column(BigInteger)  # wallet minor units to reverse
    debited: Mapped[int] = mapped_column(BigInteger)
    shortfall: Mapped[int] = mapped_column(BigInteger)
    ledger_entry_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # webhook:dodo or webhook:stripe ("unknown" before actors were recorded).
    actor: Mapped[str] = mapped_column(String(64), server_default="unknown")


REFUND_SOURCES = ("charge", "topup", "inbox", "unknown")


class RefundedPayment(Base):
    """How much of one payment has been refunded to a customer's wallet credit.

    Refunds of a payment lock this row before they compute what is left, so concurrent
    refunds queue here and their sum never passes ``payment_amount`` (the CHECK is the last
    guard). ``payment_amount`` is what the system knew of the payment at its first refund
    (``source``); NULL for one it had never seen, refunded under
    ALLOW_UNKNOWN_PAYMENT_REFUNDS, whose refunds only the per-refund cap bounds.
    """

    __tablename__ = "refunded_payments"
    __table_args__ = (
        CheckConstraint("refunded_amount >= 0", name="refunded_non_negative"),
        CheckConstraint("payment_amount >= 0", name="payment_amount_non_negative"),
        CheckConstraint(
            "payment_amount IS NULL OR refunded_amount <= payment_amount",
            name="refunded_le_payment",
        ),
        CheckConstraint(
            "source IN (" + ", ".join(f"'{s}'" for s in REFUND_SOURCES) + ")",
            name="source_valid",
        ),
    )

    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.customer_id"), primary_key=True)
    payment_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    source: Mapped[str] = mapped_column(String(8))
    currency: Mapped[str] = mapped_column(String(3))
    payment_amount: Mapped[int | None] = mapped_column(BigInteger)
    refunded_amount: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class AppSecret(Base):
    """A secret the service generated for itself, once, and every process shares (the
    dashboard's and portal's signing key when SECRET_KEY is unset). Written once, never
    changed: the first process to insert it wins and every other reads the winner's."""

    __tablename__ = "app_secrets"
    __table_args__ = (CheckConstraint("length(value) >= 32", name="value_long_enough"),)

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
