"""``before_request`` checks every API-key route shares (besides ``webhooks.auth``): one value
per query parameter, and a body that is a JSON object."""

from __future__ import annotations

from flask import Response, request
from werkzeug.exceptions import BadRequest

from webhooks import errors


def reject_repeated_query() -> Response | None:
    """Every query parameter of the API is a single value: ``?a=1&a=2`` is ambiguous, so it is
    refused rather than silently reduced to one of its values."""
    for name in request.args:
        if len(request.args.getlist(name)) > 1:
            return errors.error_response(
                422, "VALIDATION_ERROR", f"{name}: given more than once", field=name
            )
    return None


def require_json_body() -> Response | None:
    """A body must be a JSON object: malformed JSON is a 400; anything else a 422 naming it.

    An empty body passes through: a route that needs one answers 422 ``body`` from its model,
    and a route without a body model does not care.
    """
    if request.method not in ("POST", "PUT", "PATCH") or not request.get_data(cache=True):
        return None
    if not request.is_json:
        return errors.error_response(
            422,
            "UNSUPPORTED_CONTENT_TYPE",
            "content-type: expected application/json",
            field="content-type",
        )
    try:
        body = request.get_json()
    except BadRequest:
        return errors.error_response(400, "MALFORMED_JSON", "body: not valid JSON", field="body")
    if not isinstance(body, dict):
        return errors.error_response(
            422, "VALIDATION_ERROR", "body: must be a JSON object", field="body"
        )
    return None
