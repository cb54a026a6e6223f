"""Bearer API-key authentication for the API blueprints."""

from __future__ import annotations

from flask import Response, current_app, g, request

from webhooks.errors import error_response
from worker.access.apikeys import authenticate

BEARER_SECURITY = [{"bearerAuth": []}]
SECURITY_SCHEMES = {"bearerAuth": {"type": "http", "scheme": "bearer"}}


def _unauthorized() -> Response:
    # Deliberately the same answer for a missing, malformed, unknown or revoked key.
    response = error_response(401, "UNAUTHORIZED", "A valid API key is required")
    response.headers["WWW-Authenticate"] = "Bearer"
    return response


def require_api_key() -> Response | None:
    """``before_request`` hook: sets ``g.principal`` or answers 401."""
    if request.method == "OPTIONS":
        return None
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented:
        return _unauthorized()
    principal = authenticate(current_app.config["SETTINGS"], presented)
    if principal is None:
        return _unauthorized()
    g.principal = principal
    return None
