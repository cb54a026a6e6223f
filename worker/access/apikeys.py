"""API keys: created once, shown once, stored only as a SHA-256 hash, revocable."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.access import refused
from worker.config import Settings
from worker.errors import NotFound
from worker.infra.db import transaction
from worker.models import ApiKey, new_id, utcnow

KEY_PREFIX = "bwk_"
# Every key ever issued is the prefix and 43 url-safe base64 characters (token_urlsafe(32)).
KEY_SHAPE = re.compile(KEY_PREFIX + r"[A-Za-z0-9_-]{43}")

# A stored key's principal is remembered per process, by database and key hash, for this
# many seconds: without it every request would open a transaction of its own (BEGIN, SELECT,
# COMMIT) just to authenticate. Revoking a key forgets every remembered principal of the
# revoking process at once; elsewhere (another web worker, a revocation from the CLI) the key
# stops working within this bound. A new key works at once: only valid keys are remembered
# here, and refused ones (worker.access.refused) are keys that can never become valid.
PRINCIPAL_CACHE_SECONDS = 5.0
_PRINCIPAL_CACHE_MAX = 1024
_principals: dict[tuple[str, str], tuple[float, Principal]] = {}


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
    _principals.clear()
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
    return _lookup_hash(session, hash_key(presented))


def _lookup_hash(session: Session, key_hash: str) -> Principal | None:
    row = session.execute(
        select(ApiKey.id, ApiKey.is_admin, ApiKey.revoked_at).where(ApiKey.key_hash == key_hash)
    ).first()
    if row is None or row.revoked_at is not None:
        return None
    return Principal(key_id=row.id, is_admin=row.is_admin)


def authenticate(settings: Settings, presented: str) -> Principal | None:
    """The principal of ``presented`` (the bootstrap key or a stored, unrevoked key), or None.

    A stored key is looked up in its own transaction at most once per
    ``PRINCIPAL_CACHE_SECONDS`` per process.
    """
    principal = bootstrap_principal(presented, settings.api_key)
    if principal is not None or not KEY_SHAPE.fullmatch(presented):
        return principal  # no key we issue has another shape: no database work
    cache_key = (settings.database_url, hash_key(presented))
    if refused.recently(cache_key):
        return None
    now = time.monotonic()
    cached = _principals.get(cache_key)
    if cached is not None and now - cached[0] < PRINCIPAL_CACHE_SECONDS:
        return cached[1]
    with transaction(settings) as session:
        principal = _lookup_hash(session, cache_key[1])
    if principal is None:
        _principals.pop(cache_key, None)
        refused.remember(cache_key)
        return None
    if len(_principals) >= _PRINCIPAL_CACHE_MAX:  # bounded: the keys come from clients
        _principals.clear()
    # Stamped with the time before the lookup, so the bound holds from what the database said.
    _principals[cache_key] = (now, principal)
    return principal
