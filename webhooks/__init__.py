"""The HTTP side: ``webhooks:create_app()`` serves provider webhooks and the wallet API."""

from __future__ import annotations

from flask import Response, jsonify, redirect, request
from flask_openapi3 import Info, OpenAPI

from webhooks import api, charges, errors, health, providers
from webhooks.auth import SECURITY_SCHEMES, require_api_key
from worker.config import Settings, get_settings

MAX_BODY_BYTES = 1024 * 1024


def create_app(settings: Settings | None = None) -> OpenAPI:
    """Build the Flask app; ``settings`` defaults to the environment's."""
    settings = settings or get_settings()
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

    # Hooks live on the app, not on the module-level blueprints, so create_app() can build
    # several apps in one process (tests do) without mutating shared blueprint state.
    api_blueprints = (api.bp, charges.bp)
    protected = {bp.name for bp in api_blueprints}

    @app.before_request
    def _api_guard() -> Response | None:
        if request.blueprint not in protected:
            return None
        return require_api_key() or _require_json_body()

    for blueprint in api_blueprints:
        app.register_api(blueprint)
    app.register_api(health.bp)
    # Authenticated by the provider's signature, not by an API key.
    app.register_api(providers.bp)

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
