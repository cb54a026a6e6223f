"""One JSON error shape for every failure: ``{"code", "message", ...details}``.

HTTP statuses are chosen here and nowhere else. The ``*Out`` models document each status in
``/openapi.json``; every one of them is an ``ErrorOut`` (``code`` + ``message``) plus the
details that status carries.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.exc import DataError, OperationalError
from werkzeug.exceptions import HTTPException

from webhooks.api.schemas import NO_NUL
from worker.errors import (
    BillingError,
    DuplicateEntry,
    IdempotencyKeyReused,
    InsufficientBalance,
    NotFound,
    ValidationFailed,
)
from worker.schemas import LedgerEntryOut, WalletOut

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
    code: str = Field(description="Stable and machine-readable, e.g. `INSUFFICIENT_BALANCE`.")
    message: str = Field(description="For humans; names the field at fault where there is one.")


class FieldProblem(BaseModel):
    field: str = Field(description="Dotted path of the offending input, e.g. `metadata.plan`.")
    message: str


class BadRequestOut(ErrorOut):
    """400: `INSUFFICIENT_BALANCE` (a debit beyond the balance; nothing was written and the
    idempotency key stays unused) or `MALFORMED_JSON` (the body is not JSON)."""

    model_config = ConfigDict(
        extra="allow",
        openapi_extra={"description": "Insufficient balance, or a body that is not JSON."},
    )
    balance: int | None = Field(None, description="INSUFFICIENT_BALANCE: the current balance.")
    requested_amount: int | None = Field(
        None, description="INSUFFICIENT_BALANCE: the refused debit."
    )
    currency: str | None = None
    field: str | None = None


class UnauthorizedOut(ErrorOut):
    """401 `UNAUTHORIZED`: the same answer for a missing, malformed, unknown or revoked key."""

    model_config = ConfigDict(
        extra="allow",
        openapi_extra={"description": "Missing or invalid API key (Authorization: Bearer KEY)."},
    )


class NotFoundOut(ErrorOut):
    """404 `CUSTOMER_NOT_FOUND` (or `NOT_FOUND` for an unknown route)."""

    model_config = ConfigDict(extra="allow", openapi_extra={"description": "No such customer."})
    customer_id: str | None = None


class DuplicateOut(ErrorOut):
    """409 `DUPLICATE_IDEMPOTENCY_KEY`: this key was already used with these parameters.
    Nothing changed; the original entry and the wallet as it stands now are included."""

    model_config = ConfigDict(
        extra="allow",
        openapi_extra={
            "description": "Idempotency key already used with the same parameters; nothing "
            "changed. Do not retry.",
            "headers": {
                "x-should-retry": {
                    "description": "Always `false`: tells Stainless-generated SDKs (Dodo's) "
                    "not to retry this 409.",
                    "schema": {"type": "string", "enum": ["false"]},
                }
            },
        },
    )
    entry_id: str
    entry: LedgerEntryOut
    wallet: WalletOut


class TooLargeOut(ErrorOut):
    """413 `REQUEST_ENTITY_TOO_LARGE`: the body is over 1 MiB."""

    model_config = ConfigDict(
        extra="allow", openapi_extra={"description": "Request body over 1 MiB."}
    )


class ValidationOut(ErrorOut):
    """422: `VALIDATION_ERROR`, `INVALID_AMOUNT`, `UNSUPPORTED_CURRENCY`,
    `UNSUPPORTED_CONTENT_TYPE` or `IDEMPOTENCY_KEY_REUSED` (same key, other parameters)."""

    model_config = ConfigDict(
        extra="allow",
        openapi_extra={
            "description": "Invalid input (the `field` is named), or an idempotency key reused "
            "with different parameters (`differing_fields`)."
        },
    )
    field: str | None = Field(None, description="The first offending field.")
    errors: list[FieldProblem] | None = Field(None, description="Every offending field.")
    differing_fields: list[str] | None = Field(
        None, description="IDEMPOTENCY_KEY_REUSED: the parameters that differ from the original."
    )
    idempotency_key: str | None = None
    supported: list[str] | None = Field(
        None, description="UNSUPPORTED_CURRENCY: the configured currencies."
    )


class UnavailableOut(ErrorOut):
    """503 `DATABASE_UNAVAILABLE`: retry later (see `Retry-After`)."""

    model_config = ConfigDict(
        extra="allow", openapi_extra={"description": "The database is unavailable; retry later."}
    )


# The statuses every API route can answer besides its success and route-specific ones.
COMMON_RESPONSES: dict[int, type[ErrorOut]] = {
    400: BadRequestOut,
    401: UnauthorizedOut,
    404: NotFoundOut,
    422: ValidationOut,
    503: UnavailableOut,
}
BODY_RESPONSES: dict[int, type[ErrorOut]] = {413: TooLargeOut}


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
    problems: list[dict[str, str]] = []
    for e in error.errors(include_url=False, include_input=False):
        field = ".".join(str(part) for part in e["loc"]) or "body"
        message = _friendlier(e)
        if {"field": field, "message": message} not in problems:
            problems.append({"field": field, "message": message})
    first = problems[0] if problems else {"field": "body", "message": "invalid"}
    return error_response(
        422,
        "VALIDATION_ERROR",
        f"{first['field']}: {first['message']}",
        field=first["field"],
        errors=problems,
    )


def _friendlier(error: Any) -> str:
    """pydantic's message, except where it would leak a regex or a class name."""
    if error["type"] == "string_pattern_mismatch" and error["ctx"]["pattern"] == NO_NUL:
        return "must not contain NUL (\\u0000) characters"
    if error["type"] == "model_type" and not error["loc"]:
        return "a JSON object is required"
    return str(error["msg"])


def register(app: Flask) -> None:
    app.register_error_handler(BillingError, billing_error_response)

    @app.errorhandler(HTTPException)
    def _http(error: HTTPException) -> Response:
        if error.response is not None and error.response.mimetype == "application/json":
            return error.response  # already ours (e.g. a validation error via abort)
        code = (error.name or "error").upper().replace(" ", "_")
        response = error_response(error.code or 500, code, error.description or error.name)
        if error.code == 405 and getattr(error, "valid_methods", None):
            response.headers["Allow"] = ", ".join(error.valid_methods)
        return response

    @app.errorhandler(OperationalError)
    def _database_down(error: OperationalError) -> Response:
        log.error("database unavailable: %s", error.orig)
        response = error_response(503, "DATABASE_UNAVAILABLE", "The database is unavailable")
        response.headers["Retry-After"] = "5"
        return response

    @app.errorhandler(DataError)
    def _data_error(error: DataError) -> Response:
        # The schemas refuse what the database cannot store (NUL, out-of-range numbers); this is
        # the last line of defence for anything they missed: the client's input, so a 4xx.
        log.warning("database refused a value: %s", error.orig)
        return error_response(
            422, "VALIDATION_ERROR", "body: a value cannot be stored", field="body"
        )

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, "INTERNAL_ERROR", "Internal server error")
