"""Throttling of failed authentications, per client address (Flask-Limiter's storage).

Only failures are counted, and only after the key was judged: a request with a valid key
never touches the counter, so no amount of failures from an address (or from anyone else)
locks a valid key out. Flask-Limiter's route limits check *before* the view, which would
refuse a valid key from a throttled address; so its library, ``limits``, is used for what it
does well (storage from a URI, the moving-window strategy) and hit here, when a key has
failed. Flask-Limiter's extension is not installed: its ``before_request`` hook, which
resolves (here: no) route limits on every request, was 12 % of a ledger request's CPU.

Storage: ``RATELIMIT_STORAGE_URL`` if set; else the broker's Redis (one count for every
gunicorn worker and host); else, on the embedded default or a non-Redis broker, each
process's memory. When the storage is unreachable the counts fall back to process memory:
a Redis outage must not turn every failed key into a 500, nor lift the throttle entirely.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time

from flask import Flask, current_app, request
from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage, Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter, RateLimiter

from worker.config import MIN_BOOTSTRAP_KEY_LENGTH, Settings, weak_bootstrap_key
from worker.errors import TooManyFailedAuthentications

log = logging.getLogger(__name__)

EXTENSION = "billing_auth_throttle"
NAMESPACE = "auth-failure"


def storage_url(settings: Settings) -> str:
    """Where failure counts live (a ``limits`` storage URI)."""
    if settings.ratelimit_storage_url:
        return settings.ratelimit_storage_url
    broker = settings.broker_url or ""
    if broker.startswith(("redis://", "rediss://")):
        return broker
    if not settings.is_sqlite:
        log.warning(
            "failed-authentication counts are kept per process: set RATELIMIT_STORAGE_URL "
            "(or a redis:// CELERY_BROKER_URL) to share them between processes"
        )
    return "memory://"


class AuthThrottle:
    """One app's failure counter: ``limit`` failures a minute per client address."""

    def __init__(self, app: Flask, settings: Settings) -> None:
        self.item = RateLimitItemPerMinute(settings.auth_failure_limit)
        # Stored on the app, not in a module global, so each create_app() (tests) starts empty.
        uri = storage_url(settings)
        # A Redis that does not answer must not hold a failing request for the OS's connect
        # timeout (minutes): give up quickly and count in memory instead.
        options = (
            {"socket_connect_timeout": 1, "socket_timeout": 1} if uri.startswith("redis") else {}
        )
        self.storage: Storage = storage_from_string(uri, **options)
        self.strategy: RateLimiter = MovingWindowRateLimiter(self.storage)
        self._fallback: RateLimiter = MovingWindowRateLimiter(MemoryStorage())

    def count_failure(self, address: str) -> None:
        """Count one failure of ``address``; raise ``TooManyFailedAuthentications`` past
        the limit (that failure is not counted, so the window keeps moving)."""
        try:
            allowed = self.strategy.hit(self.item, NAMESPACE, address)
            strategy = self.strategy
        except Exception as exc:  # the storage (Redis) is down: count in this process
            log.warning("auth throttle storage unavailable (%s): counting in memory", exc)
            strategy = self._fallback
            allowed = strategy.hit(self.item, NAMESPACE, address)
        if allowed:
            return
        try:
            reset = strategy.get_window_stats(self.item, NAMESPACE, address).reset_time
        except Exception:
            reset = time.time() + self.item.get_expiry()
        raise TooManyFailedAuthentications(retry_after=max(1, math.ceil(reset - time.time())))


def client_address() -> str:
    """The address failures are counted against: the peer's IP; an IPv6 peer by its /64
    (one host usually holds a whole /64, so counting single addresses would not throttle)."""
    raw = request.remote_addr or "unknown"
    try:
        address = ipaddress.ip_address(raw)
    except ValueError:
        return raw
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def install(app: Flask, settings: Settings) -> None:
    """Attach the failure throttle to ``app``; warn about a short bootstrap key (only the
    embedded default gets this far with one: elsewhere start-up refused it)."""
    app.extensions[EXTENSION] = AuthThrottle(app, settings)
    if weak_bootstrap_key(settings):
        log.warning(
            "BILLING_API_KEY is shorter than %d characters: fine for trying it out on the "
            "embedded default, refused with any other database",
            MIN_BOOTSTRAP_KEY_LENGTH,
        )


def count_failure() -> None:
    """The current request failed to authenticate: count it against its address."""
    throttle: AuthThrottle | None = current_app.extensions.get(EXTENSION)
    if throttle is not None:
        throttle.count_failure(client_address())
