"""``/openapi.json`` (also at ``/docs/openapi.json`` for Swagger UI) and the ``/docs`` redirect."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify, redirect
from flask_openapi3 import OpenAPI

from webhooks.api.schemas import CURRENCY_PATTERN
from worker.reports.schemas import (
    ANALYTICS_EXAMPLE,
    BALANCE_EXAMPLE,
    CSV_EXAMPLE,
    NDJSON_EXAMPLE,
    STATEMENT_CSV_EXAMPLE,
    STATEMENT_EXAMPLE,
    SUMMARY_EXAMPLE,
)

_WALLETS = "/customers/{customer_id}/wallets"
_TEXT = {"type": "string"}
# The report routes' 200 answers: an example per media type, and the streamed media types
# (CSV, NDJSON) that no pydantic model describes.
REPORT_EXAMPLES: dict[str, dict[str, tuple[dict[str, Any] | None, Any]]] = {
    f"{_WALLETS}/analytics": {"application/json": (None, ANALYTICS_EXAMPLE)},
    f"{_WALLETS}/balance": {"application/json": (None, BALANCE_EXAMPLE)},
    f"{_WALLETS}/statement": {
        "application/json": (None, STATEMENT_EXAMPLE),
        "text/csv": (_TEXT, STATEMENT_CSV_EXAMPLE),
    },
    f"{_WALLETS}/ledger-entries/export": {
        "text/csv": (_TEXT, CSV_EXAMPLE),
        "application/x-ndjson": (_TEXT, NDJSON_EXAMPLE),
    },
    "/analytics/summary": {"application/json": (None, SUMMARY_EXAMPLE)},
}


def install(app: OpenAPI, currencies: tuple[str, ...]) -> None:
    """Serve the spec with ``currencies`` as every currency field's enum; call it last."""

    def openapi_json() -> Response:
        # Built on first request (flask-openapi3 caches it), after every blueprint is in.
        spec = app.api_doc
        _document_currencies(spec, currencies)
        _document_reports(spec)
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


def _document_reports(spec: dict[str, Any]) -> None:
    """Each report route's 200 with an example per media type it answers in."""
    for path, media in REPORT_EXAMPLES.items():
        ok = spec["paths"][path]["get"]["responses"].setdefault("200", {"description": "OK"})
        content = ok.setdefault("content", {})
        for media_type, (schema, example) in media.items():
            entry = content.setdefault(media_type, {})
            if schema is not None:
                entry["schema"] = schema
            entry["example"] = example
        if "application/json" not in media:
            content.pop("application/json", None)
