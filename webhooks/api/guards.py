"""``before_request`` checks every API-key route shares (besides ``webhooks.auth``): one value
per query parameter, and a body that is a JSON object."""

from __future__ import annotations

from flask import request
from werkzeug.exceptions import BadRequest

from worker.errors import MalformedJSON, UnsupportedContentType, ValidationFailed


def reject_repeated_query() -> None:
    """Every query parameter of the API is a single value: ``?a=1&a=2`` is ambiguous, so it is
    refused rather than silently reduced to one of its values."""
    if not request.query_string:
        return  # most requests: no query to parse into a MultiDict at all
    for name in request.args:
        if len(request.args.getlist(name)) > 1:
            raise ValidationFailed(name, "given more than once")


def require_json_body() -> None:
    """A body must be a JSON object: malformed JSON is a 400; anything else a 422 naming it.

    An empty body passes through: a route that needs one answers 422 ``body`` from its model,
    and a route without a body model does not care.
    """
    if request.method not in ("POST", "PUT", "PATCH") or not request.get_data(cache=True):
        return
    if not request.is_json:
        raise UnsupportedContentType("content-type", "expected application/json")
    try:
        body = request.get_json()
    except BadRequest:
        raise MalformedJSON("body", "not valid JSON") from None
    if not isinstance(body, dict):
        raise ValidationFailed("body", "must be a JSON object")
