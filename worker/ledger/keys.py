"""Idempotency keys: two namespaces, fingerprints, and the one check of a used key.

A key is unique per customer *and namespace*. Keys a client sends (the API, the CLI) live in
``client``; the keys the system derives from its own business objects (``payment:{id}``,
``refund:{id}``, ``usage:{first}-{last}:{currency}``, ``wallet_refund:{id}``, reversal keys,
...) live in ``system``. Whatever a client sends, it can never equal a system key, so no API
call can block, change or stall a payment credit, a refund, usage billing or a charge.

A retry is "the same request" when its fingerprint matches: the same key with the same
parameters is a duplicate (the original stands), with different parameters a refusal naming
the fields that differ.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from worker.errors import DuplicateEntry, IdempotencyKeyReused, ValidationFailed
from worker.ledger import pg
from worker.ledger.objects import snapshot
from worker.models import KEY_SCOPES, LedgerEntry

CLIENT, SYSTEM = KEY_SCOPES
MAX_KEY_LENGTH = 255


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    value: str
    scope: str = CLIENT

    def __str__(self) -> str:
        return self.value


def client_key(value: str | IdempotencyKey | None) -> IdempotencyKey | None:
    """A key as a client sent it. A plain string is always a client key: the safe default."""
    if value is None or isinstance(value, IdempotencyKey):
        return value
    return IdempotencyKey(value, CLIENT)


def system_key(*parts: object) -> IdempotencyKey:
    """The system's own key for an effect, derived from its business object, never from a
    delivery: ``system_key("payment", payment_id)`` is ``payment:{payment_id}``."""
    return IdempotencyKey(":".join(str(p) for p in parts), SYSTEM)


def validate_key(key: IdempotencyKey | None) -> IdempotencyKey | None:
    if key is None:
        return None
    if not isinstance(key.value, str) or not key.value:
        raise ValidationFailed("idempotency_key", "must be a non-empty string")
    if len(key.value) > MAX_KEY_LENGTH:
        raise ValidationFailed("idempotency_key", f"must be at most {MAX_KEY_LENGTH} characters")
    if key.scope not in KEY_SCOPES:
        raise ValidationFailed("idempotency_key", f"unknown namespace {key.scope!r}")
    return key


def fingerprint(
    *,
    currency: str,
    amount: int,
    is_credit: bool,
    event_type: str,
    reason: str | None,
    reference_object_id: str | None,
    **extra: Any,
) -> str:
    """What a retry must repeat exactly for its key to mean "the same request".

    ``extra`` holds the parameters added after the first release (the shortfall rule, ...):
    only those that are set join the hash, so every fingerprint stored before they existed
    still matches its retry.
    """
    fields: list[Any] = [currency, amount, is_credit, event_type, reason, reference_object_id]
    added = sorted((name, value) for name, value in extra.items() if value is not None)
    if added:
        fields.append(added)
    canonical = json.dumps(fields, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def used_keys(
    session: Session, wanted: Iterable[tuple[str, IdempotencyKey]]
) -> dict[tuple[str, IdempotencyKey], LedgerEntry]:
    """The entries already holding any of ``wanted`` (``(customer_id, key)``), in one query."""
    triples = {(cid, key.scope, key.value): (cid, key) for cid, key in wanted}
    if not triples:
        return {}
    if session.get_bind().dialect.name == "postgresql":
        rows = session.scalars(
            select(LedgerEntry).from_statement(pg.USED_KEYS),
            {
                "keys": pg.rows_json(
                    [
                        {"customer_id": c, "key_scope": scope, "idempotency_key": value}
                        for c, scope, value in triples
                    ]
                )
            },
        )
    else:
        rows = session.scalars(
            select(LedgerEntry).where(
                tuple_(
                    LedgerEntry.customer_id, LedgerEntry.key_scope, LedgerEntry.idempotency_key
                ).in_(list(triples))
            )
        )
    return {triples[(e.customer_id, e.key_scope, e.idempotency_key)]: e for e in rows}


def find_entry(session: Session, customer_id: str, key: str | IdempotencyKey) -> LedgerEntry | None:
    """The entry holding ``key`` (a plain string is a client key), or None."""
    key = client_key(key)
    assert key is not None
    return session.scalar(
        select(LedgerEntry).where(
            LedgerEntry.customer_id == customer_id,
            LedgerEntry.key_scope == key.scope,
            LedgerEntry.idempotency_key == key.value,
        )
    )


def refusal(
    original: LedgerEntry, key: IdempotencyKey, params: dict[str, Any]
) -> DuplicateEntry | IdempotencyKeyReused:
    """What to answer a request whose key ``original`` already holds: the duplicate when the
    fingerprints match, else the refusal naming the parameters that differ.

    The caller's transaction usually rolls back on these errors, which would expire a
    session-bound entry and leave the error's ``entry`` unreadable: they carry a detached copy.
    """
    original = snapshot(original)
    if original.fingerprint == fingerprint(**params):
        return DuplicateEntry(original)
    differing = [
        "entry_type" if name == "is_credit" else name
        for name, value in params.items()
        if hasattr(original, name) and getattr(original, name) != value
    ]
    return IdempotencyKeyReused(key.value, differing or ["parameters"], original)
