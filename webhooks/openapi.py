"""``/openapi.json`` (also at ``/docs/openapi.json`` for Swagger UI) and the ``/docs`` redirect."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify, redirect
from flask_openapi3 import OpenAPI

from webhooks.api.schemas import CURRENCY_PATTERN


def install(app: OpenAPI, currencies: tuple[str, ...]) -> None:
    """Serve the spec with ``currencies`` as every currency field's enum; call it last."""

    def openapi_json() -> Response:
        # Built on first request (flask-openapi3 caches it), after every blueprint is in.
        spec = app.api_doc
        _document_currencies(spec, currencies)
        return jsonify(spec)

    app.add_url_rule("/openapi.json", "openapi_json", openapi_json)
    app.view_functions["openapi.doc_url"] = openapi_json  # /docs/openapi.json (Swagger UI)
    app.add_url_rule("/docs", "docs_root", lambda: redirect("/docs/swagger", code=302))


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
