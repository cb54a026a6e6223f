"""API keys: created once, shown once, stored only as a SHA-256 hash, revocable."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.errors import NotFound
from worker.models import ApiKey, new_id, utcnow

KEY_PREFIX = "bwk_"


@dataclass(frozen=True)
class Principal:
    """Who is calling: a stored key's id, or ``bootstrap`` for BILLING_API_KEY."""

    key_id: str
    is_admin: bool


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(
    session: Session, *, name: str | None = None, admin: bool = False
) -> tuple[ApiKey, str]:
    """Create a key; returns the row and the secret, which is never retrievable again."""
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(
        id=new_id("key", 12),
        name=name,
        key_hash=hash_key(secret),
        is_admin=admin,
        created_at=utcnow(),
    )
    session.add(key)
    session.flush()
    return key, secret


def revoke_key(session: Session, key_id: str) -> ApiKey:
    key = session.get(ApiKey, key_id)
    if key is None:
        raise NotFound(f"API key {key_id} not found", key_id=key_id)
    if key.revoked_at is None:
        key.revoked_at = utcnow()
    return key


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at)))


def bootstrap_principal(presented: str, bootstrap_key: str | None) -> Principal | None:
    """The admin principal if ``presented`` is BILLING_API_KEY (constant-time comparison)."""
    if bootstrap_key and hmac.compare_digest(presented.encode(), bootstrap_key.encode()):
        return Principal(key_id="bootstrap", is_admin=True)
    return None


def lookup_key(session: Session, presented: str) -> Principal | None:
    """The principal of a stored, unrevoked key, or None.

    Keys are found by the SHA-256 of the presented secret: an index lookup on a hash of a
    256-bit random secret leaks nothing useful through timing, so there is no comparison loop.
    """
    if not presented.startswith(KEY_PREFIX):
        return None
    key = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(presented)))
    if key is None or key.revoked_at is not None:
        return None
    return Principal(key_id=key.id, is_admin=key.is_admin)
