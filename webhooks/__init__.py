"""The HTTP side: ``webhooks:create_app()`` serves provider webhooks and the wallet API."""

from __future__ import annotations

from flask import Response, jsonify, redirect, request
from flask_openapi3 import Info, OpenAPI

from webhooks import api, errors, health, usage
from webhooks.auth import SECURITY_SCHEMES, require_api_key
from worker.config import Settings, get_settings
from worker.pricing import get_pricing

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
    app.json.sort_keys = False
    errors.register(app)

    for blueprint in (api.bp, usage.bp):
        # Blueprints are module-level: a second create_app() in one process (tests) must not
        # add the hooks again (Flask refuses setup calls on a registered blueprint).
        if require_api_key not in blueprint.before_request_funcs.get(None, []):
            blueprint.before_request(require_api_key)
            blueprint.before_request(_require_json_body)
        app.register_api(blueprint)
    app.register_api(health.bp)

    app.add_url_rule("/openapi.json", "openapi_json", lambda: jsonify(app.api_doc))
    app.add_url_rule("/docs", "docs_root", lambda: redirect("/docs/swagger", code=302))
    return app


def _require_json_body() -> Response | None:
    """Malformed JSON is a 400; a body that is not JSON at all is a 422 naming the header."""
    if request.method not in ("POST", "PUT", "PATCH") or not request.get_data(cache=True):
        return None
    if not request.is_json:
        return errors.error_response(
            422,
            "UNSUPPORTED_CONTENT_TYPE",
            "content-type: expected application/json",
            field="content-type",
        )
    if request.get_json(silent=True) is None:
        return errors.error_response(400, "MALFORMED_JSON", "body: not valid JSON", field="body")
    return None
