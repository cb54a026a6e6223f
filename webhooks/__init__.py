"""The HTTP side: ``webhooks:create_app()`` serves provider webhooks and the wallet API."""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Response, jsonify, redirect, request
from flask.json.provider import DefaultJSONProvider
from flask_openapi3 import Info, OpenAPI
from werkzeug.exceptions import BadRequest

from tasks import publisher
from webhooks import admin, api, charges, errors, health, metrics, providers, strict_json, usage
from webhooks.auth import SECURITY_SCHEMES, require_api_key
from webhooks.schemas import CURRENCY_PATTERN
from worker.config import Settings, get_settings
from worker.infra.logs import configure_logging
from worker.notify import commit_hooks
from worker.usage.pricing import get_pricing

MAX_BODY_BYTES = 1024 * 1024


def create_app(settings: Settings | None = None) -> OpenAPI:
    """Build the Flask app; ``settings`` defaults to the environment's."""
    settings = settings or get_settings()
    get_pricing(settings)  # a malformed PRICING_FILE stops start-up here, naming the problem
    app = OpenAPI(
        __name__,
        info=Info(
            title="billing-worker",
            version="0.1.0",
            description="Prepaid wallets with an append-only ledger; Dodo Payments compatible.",
        ),
        security_schemes=SECURITY_SCHEMES,
        validation_error_status=422,
        validation_error_callback=errors.validation_error_response,
        doc_prefix="/docs",
        doc_url="/openapi.json",
    )
    app.config["SETTINGS"] = settings
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json = StrictJSONProvider(app)
    errors.register(app)

    for blueprint in (api.bp, charges.bp, usage.bp, admin.bp):
        app.register_api(blueprint)
        # Hooked on the app, keyed by blueprint, so create_app() can run more than once per
        # process (tests); blueprint.before_request() would mutate the module-level blueprint.
        app.before_request_funcs.setdefault(blueprint.name, []).extend(
            [require_api_key, _reject_repeated_query, _require_json_body]
        )
    app.register_api(health.bp)
    # Authenticated by the provider's signature, not by an API key.
    app.register_api(providers.bp)
    app.register_api(metrics.bp)
    metrics.instrument(app)
    # Balance changes committed by requests get their low-balance check before commit, and
    # their notifications published after it (the Celery app is built on the first send).
    commit_hooks.install()
    publisher.install()
    if not logging.getLogger().handlers:  # gunicorn, flask run; a test runner keeps its own
        configure_logging()

    def openapi_json() -> Response:
        # Built on first request (flask-openapi3 caches it), after every blueprint is in.
        spec = app.api_doc
        _document_currencies(spec, settings.wallet_currencies)
        return jsonify(spec)

    app.add_url_rule("/openapi.json", "openapi_json", openapi_json)
    app.view_functions["openapi.doc_url"] = openapi_json  # /docs/openapi.json (Swagger UI)
    app.add_url_rule("/docs", "docs_root", lambda: redirect("/docs/swagger", code=302))
    return app


def _document_currencies(node: Any, currencies: tuple[str, ...]) -> None:
    """Give every currency field of the spec the configured codes as its enum."""
    if isinstance(node, dict):
        if node.get("pattern") == CURRENCY_PATTERN:
            node["enum"] = list(currencies)
        for value in node.values():
            _document_currencies(value, currencies)
    elif isinstance(node, list):
        for value in node:
            _document_currencies(value, currencies)


class StrictJSONProvider(DefaultJSONProvider):
    """Standard JSON only: ``NaN``/``Infinity`` and absurd nesting are malformed input (400).

    Python's parser accepts ``NaN`` (which no database JSON column or JSON client accepts back)
    and recurses once per nesting level (a 1 MiB ``[[[[...`` would raise RecursionError, a 500).
    """

    sort_keys = False

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        try:
            if kwargs:  # nobody passes any today; honour them rather than drop them
                return json.loads(s, parse_constant=strict_json._reject_constant, **kwargs)
            return strict_json.loads(s)
        except RecursionError as exc:
            raise ValueError("JSON nested too deeply") from exc


def _reject_repeated_query() -> Response | None:
    """Every query parameter of the API is a single value: ``?a=1&a=2`` is ambiguous, so it is
    refused rather than silently reduced to one of its values."""
    for name in request.args:
        if len(request.args.getlist(name)) > 1:
            return errors.error_response(
                422, "VALIDATION_ERROR", f"{name}: given more than once", field=name
            )
    return None


def _require_json_body() -> Response | None:
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
