"""Dashboard sign-in: an API key exchanged for a signed, expiring session cookie, a CSRF token
on every form, and each view's scope checked against the key, as the API checks it.

- **The cookie** (``bw_session``, path ``/dashboard``) holds the key's SHA-256 fingerprint
  (never the key), a random CSRF token and the expiry, signed with a key derived from
  SECRET_KEY (``worker.access.signing``). HttpOnly, SameSite=Strict, and Secure whenever the
  request came over HTTPS (gunicorn sets the scheme from ``X-Forwarded-Proto`` for the proxies
  in FORWARDED_ALLOW_IPS, loopback by default). Every request checks the key again: revoking
  it (or changing BILLING_API_KEY) ends its sessions within the API's principal cache bound.
  Signing out deletes the cookie; a copy kept elsewhere still lasts until its expiry
  (DASHBOARD_SESSION_SECONDS), as with any signed-cookie session.
- **CSRF.** Our own small token instead of Flask-WTF: the dashboard keeps no Flask session and
  uses no WTForms, and the token is one random value bound to the signed cookie, compared in
  constant time on every POST. The sign-in form, before any session, carries the value of a
  signed pre-session cookie (double submit). SameSite=Strict already keeps the cookie off
  cross-site requests; the token is the second lock.
- **Scopes.** Every view declares one with ``webhooks.scopes.requires``, enforced here before
  the view runs; a view that declares nothing is admin only, as on the API.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from dataclasses import dataclass

from flask import current_app, g, request
from werkzeug.wrappers import Response

from webhooks import scopes, throttle
from worker.access import apikeys, signing
from worker.access.apikeys import Principal
from worker.access.scopes import ADMIN
from worker.config import Settings
from worker.errors import CsrfTokenInvalid

COOKIE = "bw_session"
SIGN_IN_COOKIE = "bw_sign_in"
COOKIE_PATH = "/dashboard"
PURPOSE = "dashboard-session"
SIGN_IN_PURPOSE = "dashboard-sign-in"
SIGN_IN_SECONDS = 1800  # how long a sign-in form stays usable
CSRF_FIELD = "csrf_token"
# Reachable without a session: the sign-in form and the stylesheet (the portal uses it too).
OPEN_ENDPOINTS = {"dashboard.sign_in", "dashboard.sign_in_post", "dashboard.static"}


@dataclass(frozen=True)
class DashboardSession:
    fingerprint: str
    csrf: str
    expires_at: int


class SignInRequired(Exception):
    """No valid session: the hook answers with a redirect to the sign-in page."""


def _settings() -> Settings:
    return current_app.config["SETTINGS"]


def _encode(settings: Settings, purpose: str, payload: dict) -> str:
    raw = base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode())
    return signing.sign(signing.derive(settings, purpose), raw.decode().rstrip("="))


def _decode(settings: Settings, purpose: str, value: str | None) -> dict | None:
    if not value or len(value) > 1024:
        return None
    message = signing.unsign(signing.derive(settings, purpose), value)
    if message is None:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(message + "=" * (-len(message) % 4)))
    except ValueError:
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("e"), int):
        return None
    return payload if payload["e"] > time.time() else None


def _set_cookie(response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        httponly=True,
        samesite="Strict",
        secure=request.is_secure,
    )


# -- signing in and out ----------------------------------------------------------------------


def sign_in_token(response: Response) -> str:
    """A token for the sign-in form; its twin goes in a pre-session cookie on ``response``."""
    settings = _settings()
    token = secrets.token_urlsafe(32)
    payload = {"t": token, "e": int(time.time()) + SIGN_IN_SECONDS}
    _set_cookie(
        response, SIGN_IN_COOKIE, _encode(settings, SIGN_IN_PURPOSE, payload), SIGN_IN_SECONDS
    )
    return token


def check_sign_in_token() -> None:
    payload = _decode(_settings(), SIGN_IN_PURPOSE, request.cookies.get(SIGN_IN_COOKIE))
    sent = request.form.get(CSRF_FIELD, "")
    expected = payload.get("t") if payload else None
    if not isinstance(expected, str) or not secrets.compare_digest(
        sent.encode(), expected.encode()
    ):
        raise CsrfTokenInvalid


def authenticate_key(presented: str) -> str | None:
    """The session fingerprint of ``presented``, or None (counted as a failed authentication,
    so a guessing browser meets the same 429 as a guessing API client)."""
    fingerprint = apikeys.session_fingerprint(_settings(), presented.strip()) if presented else None
    if fingerprint is None:
        throttle.count_failure()
    return fingerprint


def start(response: Response, fingerprint: str) -> None:
    """Sign in: the session cookie on ``response``, and the sign-in cookie dropped."""
    settings = _settings()
    lifetime = settings.dashboard_session_seconds
    payload = {"k": fingerprint, "c": secrets.token_urlsafe(32), "e": int(time.time()) + lifetime}
    _set_cookie(response, COOKIE, _encode(settings, PURPOSE, payload), lifetime)
    response.delete_cookie(SIGN_IN_COOKIE, path=COOKIE_PATH)


def end(response: Response) -> None:
    response.delete_cookie(COOKIE, path=COOKIE_PATH, httponly=True, samesite="Strict")


# -- every request ------------------------------------------------------------------------


def current() -> DashboardSession | None:
    payload = _decode(_settings(), PURPOSE, request.cookies.get(COOKIE))
    if (
        payload is None
        or not isinstance(payload.get("k"), str)
        or not isinstance(payload.get("c"), str)
    ):
        return None
    return DashboardSession(payload["k"], payload["c"], payload["e"])


def principal() -> Principal:
    return g.dashboard_principal


def csrf_token() -> str:
    return g.dashboard_session.csrf


def check_csrf(session: DashboardSession) -> None:
    sent = request.form.get(CSRF_FIELD, "")
    if not secrets.compare_digest(sent.encode(), session.csrf.encode()):
        raise CsrfTokenInvalid


def enforce() -> None:
    """``before_request`` of the dashboard: a session, its key still valid, the CSRF token on
    a POST, then the view's scope (403 ``ScopeRequired`` before anything is read or written)."""
    if request.endpoint in OPEN_ENDPOINTS:
        return
    session = current()
    found = apikeys.authenticate_fingerprint(_settings(), session.fingerprint) if session else None
    if session is None or found is None:
        raise SignInRequired
    g.dashboard_session = session
    g.dashboard_principal = found
    if request.method == "POST":
        check_csrf(session)
    requirement = scopes.requirement_of(current_app.view_functions.get(request.endpoint or ""))
    if requirement is None:
        needed: str | None = ADMIN  # undeclared: fail closed
    elif isinstance(requirement, scopes.ByField):
        needed = requirement.resolve()
    else:
        needed = requirement
    if needed is not None:
        found.require(needed)
