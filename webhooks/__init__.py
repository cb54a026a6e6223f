"""The HTTP side: ``webhooks:create_app()`` serves provider webhooks and the wallet API.

Where things are: ``api/`` (the routes behind an API key, and health), ``providers/`` (the
signed provider webhook receivers), ``errors`` (every error response and its status),
``auth`` (API keys), ``scopes`` (the scope each API route declares), ``throttle`` (failed
authentications per address), ``metrics`` (``/metrics`` and request counters), ``openapi``
(``/openapi.json``), ``strict_json`` (the one JSON parser for request bodies),
``json_answers`` (redirects and over-long request lines answered as JSON), ``dashboard``
(the operator dashboard and the customer portal, HTML).
"""

from __future__ import annotations

import logging

from flask_openapi3 import Info, OpenAPI
from pydantic import ValidationError

from tasks import publisher
from webhooks import (
    dashboard,
    errors,
    json_answers,
    metrics,
    openapi,
    providers,
    scopes,
    throttle,
)
from webhooks.api import (
    admin,
    charges,
    customers,
    guards,
    health,
    holds,  # noqa: F401  (adds its routes to customers.bp)
    portal,  # noqa: F401  (adds its route to customers.bp)
    reports,
    usage,
    wallets,  # noqa: F401  (adds its routes to customers.bp)
)
from webhooks.auth import SECURITY_SCHEMES, require_api_key
from webhooks.strict_json import StrictJSONProvider, StrictJSONRequest
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
        validation_error_status=errors.status_of(ValidationError),
        validation_error_callback=errors.validation_error_response,
        doc_prefix="/docs",
        doc_url="/openapi.json",
    )
    app.config["SETTINGS"] = settings
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json = StrictJSONProvider(app)
    app.request_class = StrictJSONRequest
    errors.register(app)
    throttle.install(app, settings)

    for blueprint in (customers.bp, charges.bp, usage.bp, reports.bp, admin.bp):
        app.register_api(blueprint)
        # Hooked on the app, keyed by blueprint, so create_app() can run more than once per
        # process (tests); blueprint.before_request() would mutate the module-level blueprint.
        app.before_request_funcs.setdefault(blueprint.name, []).extend(
            [
                require_api_key,
                scopes.enforce_scope,
                guards.reject_repeated_query,
                guards.require_json_body,
            ]
        )
    app.register_api(health.bp)
    # Authenticated by the provider's signature, not by an API key.
    app.register_api(providers.bp)
    app.register_api(metrics.bp)
    # Signed in with a session cookie (or, the portal, a signed link), not a bearer key.
    dashboard.install(app)
    metrics.instrument(app)
    json_answers.install(app)
    # Balance changes committed by requests get their low-balance check before commit, and
    # their notifications published after it (the Celery app is built on the first send).
    commit_hooks.install()
    publisher.install()
    if not logging.getLogger().handlers:  # gunicorn, flask run; a test runner keeps its own
        configure_logging()
    openapi.install(app, settings.wallet_currencies)
    return app
