"""Endpoint signing secrets at rest: sealed with Fernet under ENDPOINT_SECRET_KEY.

A stored secret is ``fernet:<token>`` (sealed) or ``whsec_...`` (plaintext: written before
sealing existed, or on the embedded default without a key). Both open, so an upgrade breaks
no endpoint; ``billing-worker endpoints seal-secrets`` seals the plaintext ones and re-seals
every secret under the first key (rotation: list the new key first, keep the old ones after
it until the command has run).

Without a key, the embedded default stores plaintext and logs a warning: a key generated
and kept beside the SQLite file would sit in the same directory and backups as the data it
protects, and losing it would silently break every endpoint. Any other database refuses to
store a new secret without a key.
"""

from __future__ import annotations

import logging

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from worker.config import ConfigError, Settings, parse_fernet_keys
from worker.errors import ValidationFailed

log = logging.getLogger(__name__)

PREFIX = "fernet:"


class SecretUnreadable(ConfigError):
    """A sealed secret that none of the configured keys opens (or no key is configured)."""


def _box(settings: Settings) -> MultiFernet | None:
    if not settings.endpoint_secret_key:
        return None
    keys = parse_fernet_keys(settings.endpoint_secret_key)
    return MultiFernet([Fernet(k) for k in keys])


def seal(settings: Settings, secret: str) -> str:
    """The stored form of a new ``secret``."""
    box = _box(settings)
    if box is not None:
        return PREFIX + box.encrypt(secret.encode()).decode()
    if not settings.is_sqlite:
        raise ValidationFailed(
            "ENDPOINT_SECRET_KEY",
            "required to store endpoint signing secrets outside the embedded SQLite default",
        )
    log.warning("endpoint secret stored unencrypted: set ENDPOINT_SECRET_KEY to seal it")
    return secret


def is_sealed(stored: str) -> bool:
    return stored.startswith(PREFIX)


def open_secret(settings: Settings, stored: str) -> str:
    """The secret of a stored value (sealed or plaintext)."""
    if not is_sealed(stored):
        return stored
    box = _box(settings)
    if box is None:
        raise SecretUnreadable("the endpoint secret is sealed but ENDPOINT_SECRET_KEY is not set")
    try:
        return box.decrypt(stored[len(PREFIX) :].encode()).decode()
    except InvalidToken:
        raise SecretUnreadable("no key in ENDPOINT_SECRET_KEY opens the endpoint secret") from None


def reseal(settings: Settings, stored: str) -> str:
    """``stored`` sealed under the first key (plaintext sealed, sealed rotated)."""
    box = _box(settings)
    if box is None:
        raise ValidationFailed("ENDPOINT_SECRET_KEY", "required to seal endpoint secrets")
    if is_sealed(stored):
        try:
            return PREFIX + box.rotate(stored[len(PREFIX) :].encode()).decode()
        except InvalidToken:
            raise SecretUnreadable(
                "no key in ENDPOINT_SECRET_KEY opens the endpoint secret"
            ) from None
    return PREFIX + box.encrypt(stored.encode()).decode()
