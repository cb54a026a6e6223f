"""The key that signs what the web app hands out: dashboard session cookies, portal links.

SECRET_KEY when it is set. When it is unset (the embedded default), one is generated once and
kept in the database (``app_secrets``): the first process inserts a random key with
``ON CONFLICT DO NOTHING`` and every process then reads the row that won, so all gunicorn
workers, and every restart, sign and check with the same key. Remembered per process and
database: it never changes once stored.

Keys derived from it per purpose (``derive``): a session cookie can never be presented as a
portal token or the other way round, even though both come from the same secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading

from sqlalchemy import select

from worker.config import Settings
from worker.infra.db import transaction
from worker.infra.sql import insert_ignore
from worker.models import AppSecret, utcnow

NAME = "signing_key"
_lock = threading.Lock()
_stored: dict[str, str] = {}


def secret_key(settings: Settings) -> str:
    """SECRET_KEY, or the database's generated key (created on first use)."""
    if settings.secret_key:
        return settings.secret_key
    known = _stored.get(settings.database_url)
    if known is not None:
        return known
    with _lock:
        if settings.database_url not in _stored:
            _stored[settings.database_url] = _load_or_create(settings)
        return _stored[settings.database_url]


def _load_or_create(settings: Settings) -> str:
    with transaction(settings) as session:
        session.execute(
            insert_ignore(session, AppSecret.__table__, ["name"]),
            [{"name": NAME, "value": secrets.token_urlsafe(48), "created_at": utcnow()}],
        )
        return session.scalar(select(AppSecret.value).where(AppSecret.name == NAME))


def derive(settings: Settings, purpose: str) -> bytes:
    """A key for one purpose (``dashboard-session``, ``portal-link``), from the secret."""
    return hmac.new(secret_key(settings).encode(), purpose.encode(), hashlib.sha256).digest()


def sign(key: bytes, message: str) -> str:
    """``message`` + ``.`` + its HMAC-SHA256 (url-safe base64, unpadded)."""
    mac = hmac.new(key, message.encode(), hashlib.sha256).digest()
    return message + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def unsign(key: bytes, token: str) -> str | None:
    """The message ``sign`` wrapped in ``token``, or None if it was not signed with ``key``."""
    message, dot, _ = token.rpartition(".")
    if not dot or not hmac.compare_digest(sign(key, message).encode(), token.encode()):
        return None
    return message


def forget() -> None:
    """Drop the remembered keys (tests that recreate a database under the same URL)."""
    _stored.clear()
