"""One JSON error shape for every failure: ``{"code", "message", ...details}``.

HTTP statuses are chosen here and nowhere else.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify
from pydantic import BaseModel, ConfigDict, ValidationError
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException

from worker.errors import (
    BillingError,
    DuplicateEntry,
    IdempotencyKeyReused,
    InsufficientBalance,
    NotFound,
    ValidationFailed,
)

log = logging.getLogger(__name__)

# Most specific first.
_STATUS: list[tuple[type[BillingError], int]] = [
    (InsufficientBalance, 400),
    (DuplicateEntry, 409),
    (IdempotencyKeyReused, 422),
    (ValidationFailed, 422),
    (NotFound, 404),
]


class ErrorOut(BaseModel):
    """Every error response."""

    model_config = ConfigDict(extra="allow")
    code: str
    message: str


def error_response(status: int, code: str, message: str, **extra: Any) -> Response:
    response = jsonify({"code": code, "message": message, **extra})
    response.status_code = status
    return response


def status_of(error: BillingError) -> int:
    return next((status for kind, status in _STATUS if isinstance(error, kind)), 400)


def billing_error_response(error: BillingError) -> Response:
    return error_response(status_of(error), error.code, error.message, **error.details)


def validation_error_response(error: ValidationError) -> Response:
    """flask-openapi3 hands us pydantic's errors; name each field in our shape."""
    problems = [
        {
            "field": ".".join(str(part) for part in e["loc"]) or "body",
            "message": e["msg"],
        }
        for e in error.errors(include_url=False, include_context=False, include_input=False)
    ]
    first = problems[0] if problems else {"field": "body", "message": "invalid"}
    return error_response(
        422,
        "VALIDATION_ERROR",
        f"{first['field']}: {first['message']}",
        field=first["field"],
        errors=problems,
    )


def register(app: Flask) -> None:
    app.register_error_handler(BillingError, billing_error_response)

    @app.errorhandler(HTTPException)
    def _http(error: HTTPException) -> Response:
        if error.response is not None and error.response.mimetype == "application/json":
            return error.response  # already ours (e.g. a validation error via abort)
        code = (error.name or "error").upper().replace(" ", "_")
        response = error_response(error.code or 500, code, error.description or error.name)
        if error.code == 405 and hasattr(error, "valid_methods") and error.valid_methods:
            response.headers["Allow"] = ", ".join(error.valid_methods)
        return response

    @app.errorhandler(OperationalError)
    def _database_down(error: OperationalError) -> Response:
        log.error("database unavailable: %s", error.orig)
        response = error_response(503, "DATABASE_UNAVAILABLE", "The database is unavailable")
        response.headers["Retry-After"] = "5"
        return response

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, "INTERNAL_ERROR", "Internal server error")
