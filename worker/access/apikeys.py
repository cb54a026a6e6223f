"""API keys: created once, shown once, stored only as a SHA-256 hash, revocable; each holds
scopes (``worker.access.scopes``) and optionally a cap on any single credit it posts."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.access import audit, refused
from worker.access.scopes import ADMIN, CREDIT, DEFAULT_SCOPES, allows, ordered, parse_scopes
from worker.config import Settings
from worker.errors import CreditLimitExceeded, NotFound, ScopeRequired, ValidationFailed
from worker.infra.db import transaction
from worker.models import ApiKey, ApiKeyScope, new_id, utcnow

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


BOOTSTRAP = "bootstrap"


@dataclass(frozen=True)
class Principal:
    """Who is calling: a stored key's id, or ``bootstrap`` for BILLING_API_KEY; what it may do."""

    key_id: str
    scopes: frozenset[str]
    max_credit: int | None = None

    @property
    def actor(self) -> str:
        """What its changes record as their actor: the key's id (``bootstrap``)."""
        return self.key_id

    @property
    def is_admin(self) -> bool:
        return ADMIN in self.scopes

    def allows(self, scope: str) -> bool:
        return allows(self.scopes, scope)

    def require(self, scope: str) -> None:
        """Raise ``ScopeRequired`` (403 naming ``scope``) unless the key holds it."""
        if not self.allows(scope):
            raise ScopeRequired(scope)

    def check_credit(self, amount: int, currency: str) -> None:
        """A credit of ``amount``: the credit scope, and at most ``max_credit`` if set."""
        self.require(CREDIT)
        if self.max_credit is not None and amount > self.max_credit:
            raise CreditLimitExceeded(requested=amount, limit=self.max_credit, currency=currency)


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(
    session: Session,
    *,
    name: str | None = None,
    scopes: Iterable[str] = DEFAULT_SCOPES,
    max_credit: int | None = None,
    actor: str = "system",
) -> tuple[ApiKey, str]:
    """Create a key holding ``scopes`` (default: read only); returns the row and the secret,
    which is never retrievable again. Audited as ``apikey.created``."""
    chosen = parse_scopes(scopes)
    if not chosen:
        raise ValidationFailed("scope", "a key needs at least one scope")
    if max_credit is not None and (
        isinstance(max_credit, bool) or not isinstance(max_credit, int) or max_credit <= 0
    ):
        raise ValidationFailed("max_credit", "must be a positive whole number of minor units")
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(
        id=new_id("key", 12),
        name=name,
        key_hash=hash_key(secret),
        max_credit=max_credit,
        created_at=utcnow(),
        created_by=actor,
    )
    session.add(key)
    session.flush()
    session.add_all(ApiKeyScope(key_id=key.id, scope=scope) for scope in ordered(chosen))
    audit.record(
        session,
        actor,
        "apikey.created",
        key.id,
        {"name": name, "scopes": ordered(chosen), "max_credit": max_credit},
    )
    session.flush()
    return key, secret


def revoke_key(session: Session, key_id: str, *, actor: str = "system") -> ApiKey:
    """Revoke ``key_id`` (audited as ``apikey.revoked``; revoking twice changes nothing)."""
    key = session.get(ApiKey, key_id)
    if key is None:
        raise NotFound(f"API key {key_id} not found", key_id=key_id)
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        key.revoked_by = actor
        audit.record(session, actor, "apikey.revoked", key.id, {"name": key.name})
    _principals.clear()
    return key


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at)))


def scopes_of(session: Session, key_ids: Iterable[str]) -> dict[str, list[str]]:
    """Each key's scopes, in the documented order."""
    found: dict[str, set[str]] = {key_id: set() for key_id in key_ids}
    rows = session.execute(
        select(ApiKeyScope.key_id, ApiKeyScope.scope).where(ApiKeyScope.key_id.in_(list(found)))
    )
    for key_id, scope in rows:
        found[key_id].add(scope)
    return {key_id: ordered(scopes) for key_id, scopes in found.items()}


def bootstrap_principal(presented: str, bootstrap_key: str | None) -> Principal | None:
    """The admin principal if ``presented`` is BILLING_API_KEY (constant-time comparison)."""
    if bootstrap_key and hmac.compare_digest(presented.encode(), bootstrap_key.encode()):
        return Principal(key_id=BOOTSTRAP, scopes=frozenset({ADMIN}))
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
    rows = session.execute(
        select(ApiKey.id, ApiKey.max_credit, ApiKey.revoked_at, ApiKeyScope.scope)
        .outerjoin(ApiKeyScope, ApiKeyScope.key_id == ApiKey.id)
        .where(ApiKey.key_hash == key_hash)
    ).all()
    if not rows or rows[0].revoked_at is not None:
        return None
    scopes = frozenset(r.scope for r in rows if r.scope is not None)
    return Principal(key_id=rows[0].id, scopes=scopes, max_credit=rows[0].max_credit)


def authenticate(settings: Settings, presented: str) -> Principal | None:
    """The principal of ``presented`` (the bootstrap key or a stored, unrevoked key), or None.

    A stored key is looked up in its own transaction at most once per
    ``PRINCIPAL_CACHE_SECONDS`` per process.
    """
    principal = bootstrap_principal(presented, settings.api_key)
    if principal is not None or not KEY_SHAPE.fullmatch(presented):
        return principal  # no key we issue has another shape: no database work
    return _stored_principal(settings, hash_key(presented))


def session_fingerprint(settings: Settings, presented: str) -> str | None:
    """What a dashboard session keeps of the key it signed in with: the key's SHA-256 (the
    bootstrap key's too), never the key. None if ``presented`` authenticates as nothing."""
    return hash_key(presented) if authenticate(settings, presented) is not None else None


def authenticate_fingerprint(settings: Settings, fingerprint: str) -> Principal | None:
    """The principal a dashboard session's ``session_fingerprint`` stands for, checked again
    now: a revoked key, or a changed BILLING_API_KEY, ends the sessions signed in with it
    (within ``PRINCIPAL_CACHE_SECONDS`` for a stored key, as for the API)."""
    if settings.api_key and hmac.compare_digest(
        fingerprint.encode(), hash_key(settings.api_key).encode()
    ):
        return Principal(key_id=BOOTSTRAP, scopes=frozenset({ADMIN}))
    return _stored_principal(settings, fingerprint)


def _stored_principal(settings: Settings, key_hash: str) -> Principal | None:
    cache_key = (settings.database_url, key_hash)
    if refused.recently(cache_key):
        return None
    now = time.monotonic()
    cached = _principals.get(cache_key)
    if cached is not None and now - cached[0] < PRINCIPAL_CACHE_SECONDS:
        return cached[1]
    with transaction(settings) as session:
        principal = _lookup_hash(session, key_hash)
    if principal is None:
        _principals.pop(cache_key, None)
        refused.remember(cache_key)
        return None
    if len(_principals) >= _PRINCIPAL_CACHE_MAX:  # bounded: the keys come from clients
        _principals.clear()
    # Stamped with the time before the lookup, so the bound holds from what the database said.
    _principals[cache_key] = (now, principal)
    return principal
