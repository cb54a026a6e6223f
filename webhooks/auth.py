"""Bearer API-key authentication for the API blueprints."""

from __future__ import annotations

from flask import current_app, g, request

from webhooks import throttle
from worker.access.apikeys import Principal, authenticate
from worker.errors import Unauthorized

BEARER_SECURITY = [{"bearerAuth": []}]
SECURITY_SCHEMES = {"bearerAuth": {"type": "http", "scheme": "bearer"}}


def require_api_key() -> None:
    """``before_request`` hook: sets ``g.principal`` or raises ``Unauthorized`` (401)."""
    if request.method == "OPTIONS":
        return
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    presented = presented.strip()
    principal = (
        authenticate(current_app.config["SETTINGS"], presented)
        if scheme.lower() == "bearer" and presented
        else None
    )
    if principal is None:
        throttle.count_failure()  # past AUTH_FAILURE_LIMIT: 429 instead of 401
        raise Unauthorized
    g.principal = principal


def principal() -> Principal:
    """The caller of this request (set by ``require_api_key``)."""
    return g.principal


def actor() -> str:
    """What this request's changes record as their actor: the key's id, or ``bootstrap``."""
    return principal().actor
