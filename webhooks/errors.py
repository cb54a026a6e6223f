"""One JSON error shape for every failure: ``{"code", "message", ...details}``.

HTTP statuses are chosen here and nowhere else: ``STATUS`` maps each error type (the core's
typed errors, ``worker.errors.BillingError`` and its subclasses, plus the framework's) to its
status, ``HEADERS`` to the headers that status carries. Everywhere else an error is raised,
never answered. The ``*Out`` models document each status in ``/openapi.json``; every one of
them is an ``ErrorOut`` (``code`` + ``message``) plus the details that status carries.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, jsonify
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.exc import DataError, OperationalError
from werkzeug import exceptions as http

from webhooks.api.schemas import NO_NUL
from worker.errors import (
    BadSignature,
    BillingError,
    BrokerUnavailable,
    ChargeNotFound,
    CreditLimitExceeded,
    CsrfTokenInvalid,
    CustomerNotFound,
    DuplicateEntry,
    EntryNotFound,
    Forbidden,
    HoldNotActive,
    HoldNotFound,
    IdempotencyKeyReused,
    InsufficientBalance,
    InvalidAmount,
    InvalidEvent,
    InvalidHeader,
    MalformedBody,
    MalformedInput,
    MalformedJSON,
    NotFound,
    PortalLinkInvalid,
    ProviderDisabled,
    RefundCapExceeded,
    RefundExceedsPayment,
    ReversalExceedsCharge,
    ScopeRequired,
    TaskNotFound,
    TooManyFailedAuthentications,
    Unauthorized,
    UnknownPayment,
    UnsupportedContentType,
    UnsupportedCurrency,
    ValidationFailed,
)
from worker.inbox import EventNotFound, EventNotReplayable
from worker.ledger.schemas import LedgerEntryOut, WalletOut
from worker.usage import EventsRejected

log = logging.getLogger(__name__)

# Every status an error response can have. Looked up along the error's class hierarchy (its
# own row first), but every BillingError subclass has a row of its own: a test fails for one
# without, so a new core error gets its status chosen here, not inherited by accident.
STATUS: dict[type[BaseException], int] = {
    # The client's input: readable but invalid (422), or not readable at all (400).
    ValidationFailed: 422,
    InvalidAmount: 422,
    UnsupportedCurrency: 422,
    UnsupportedContentType: 422,
    ReversalExceedsCharge: 422,
    RefundCapExceeded: 422,
    RefundExceedsPayment: 422,
    UnknownPayment: 422,
    EventsRejected: 422,
    MalformedInput: 400,
    MalformedBody: 400,
    MalformedJSON: 400,
    InvalidHeader: 400,
    InvalidEvent: 400,
    # Who is asking.
    Unauthorized: 401,
    BadSignature: 401,  # a provider's delivery: its signature is its credential
    PortalLinkInvalid: 401,  # a portal link tampered with or expired
    CsrfTokenInvalid: 403,  # a dashboard form not sent by the dashboard; nothing changed
    Forbidden: 403,
    TooManyFailedAuthentications: 429,
    ScopeRequired: 403,  # the key lacks the route's scope; nothing was read or written
    CreditLimitExceeded: 403,  # a credit above the key's max_credit
    # What is asked for.
    NotFound: 404,
    CustomerNotFound: 404,
    ChargeNotFound: 404,
    EntryNotFound: 404,
    HoldNotFound: 404,
    EventNotFound: 404,
    TaskNotFound: 404,
    ProviderDisabled: 404,  # an unconfigured provider's route does not exist
    # Money and idempotency.
    InsufficientBalance: 400,  # Dodo's status for a refused debit
    DuplicateEntry: 409,
    HoldNotActive: 409,  # captured, released or expired: the hold's state says which
    IdempotencyKeyReused: 422,
    EventNotReplayable: 400,
    BillingError: 400,  # raised bare nowhere; kept at the status it always had
    # Our dependencies.
    BrokerUnavailable: 503,
    OperationalError: 503,  # the database
    # The framework's: pydantic via flask-openapi3, values the database refuses, routing.
    ValidationError: 422,
    DataError: 422,
    http.NotFound: 404,
    http.MethodNotAllowed: 405,
    http.RequestEntityTooLarge: 413,
    http.RequestURITooLarge: 414,  # webhooks.json_answers: a request line over 4094 bytes
    # Any other werkzeug HTTPException keeps the status it carries (see status_of).
    Exception: 500,
}

HEADERS: dict[type[BaseException], dict[str, str]] = {
    Unauthorized: {"WWW-Authenticate": "Bearer"},
    PortalLinkInvalid: {},  # a link, not a bearer key, is what failed
    # Stainless-generated SDKs (Dodo's) retry every 409 unless told not to.
    DuplicateEntry: {"x-should-retry": "false"},
    BrokerUnavailable: {"Retry-After": "5"},
    OperationalError: {"Retry-After": "5"},
}
# Headers whose value depends on the error itself.
DYNAMIC_HEADERS: dict[type[BaseException], Callable[[Any], dict[str, str]]] = {
    TooManyFailedAuthentications: lambda e: {"Retry-After": str(e.retry_after)},
}


def status_of(error: BaseException | type[BaseException]) -> int:
    """The status for ``error`` (an instance or a class), from ``STATUS``."""
    kind = error if isinstance(error, type) else type(error)
    for cls in kind.__mro__:
        if cls in STATUS:
            return STATUS[cls]
        if cls is http.HTTPException and isinstance(error, http.HTTPException):
            return error.code or 500  # werkzeug's own answer (e.g. 400 from get_json)
    return STATUS[Exception]


def headers_of(error: BaseException) -> dict[str, str]:
    dynamic = next((DYNAMIC_HEADERS[c] for c in type(error).__mro__ if c in DYNAMIC_HEADERS), None)
    if dynamic is not None:
        return dynamic(error)
    return next((HEADERS[cls] for cls in type(error).__mro__ if cls in HEADERS), {})


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


class TooManyFailuresOut(ErrorOut):
    """429 `TOO_MANY_FAILED_AUTHENTICATIONS`: this address failed to authenticate too often
    (`AUTH_FAILURE_LIMIT` a minute); a valid key is still served. See `Retry-After`."""

    model_config = ConfigDict(
        extra="allow",
        openapi_extra={
            "description": "Too many failed authentications from this address.",
            "headers": {
                "Retry-After": {
                    "description": "Seconds until the next attempt may be counted.",
                    "schema": {"type": "string"},
                }
            },
        },
    )
    retry_after: int


class ForbiddenOut(ErrorOut):
    """403 `FORBIDDEN` (the key lacks `required_scope`) or `CREDIT_LIMIT_EXCEEDED` (a credit
    above the key's `max_credit`). Nothing was written."""

    model_config = ConfigDict(
        extra="allow",
        openapi_extra={"description": "The API key may not do this; nothing changed."},
    )
    required_scope: str | None = Field(
        None,
        description="FORBIDDEN: the scope this request needs (read, customers, debit, "
        "credit or admin).",
    )
    limit: str | None = Field(None, description="CREDIT_LIMIT_EXCEEDED: `max_credit`.")
    max_credit: int | None = Field(None, description="CREDIT_LIMIT_EXCEEDED: the key's limit.")
    requested_amount: int | None = None


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


class ConflictOut(ErrorOut):
    """409 `HOLD_NOT_ACTIVE`: the hold was captured, released or expired (`status` says
    which); nothing changed."""

    model_config = ConfigDict(
        extra="allow", openapi_extra={"description": "The hold is no longer active."}
    )
    hold_id: str | None = None
    status: str | None = Field(None, description="The hold's state: why it cannot move.")


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
    403: ForbiddenOut,  # every API-key route declares a scope (webhooks.scopes)
    404: NotFoundOut,
    429: TooManyFailuresOut,
    422: ValidationOut,
    503: UnavailableOut,
}
BODY_RESPONSES: dict[int, type[ErrorOut]] = {413: TooLargeOut}


def _respond(error: BaseException, code: str, message: str, **extra: Any) -> Response:
    """``{"code", "message", **extra}`` with the status and headers the table gives ``error``."""
    response = jsonify({"code": code, "message": message, **extra})
    response.status_code = status_of(error)
    response.headers.update(headers_of(error))
    return response


def billing_error_response(error: BillingError, **extra: Any) -> Response:
    """A core error's answer; ``extra`` adds what only the view knows (a 409's wallet)."""
    return _respond(error, error.code, error.message, **error.details, **extra)


def validation_error_response(error: ValidationError) -> Response:
    """flask-openapi3 hands us pydantic's errors; name each field in our shape."""
    problems: list[dict[str, str]] = []
    for e in error.errors(include_url=False, include_input=False):
        field = ".".join(str(part) for part in e["loc"]) or "body"
        message = _friendlier(e)
        if {"field": field, "message": message} not in problems:
            problems.append({"field": field, "message": message})
    first = problems[0] if problems else {"field": "body", "message": "invalid"}
    return _respond(
        error,
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

    @app.errorhandler(http.HTTPException)
    def _http(error: http.HTTPException) -> Response:
        if error.response is not None and error.response.mimetype == "application/json":
            return error.response  # already ours (a validation error, via flask-openapi3's abort)
        code = (error.name or "error").upper().replace(" ", "_")
        response = _respond(error, code, error.description or error.name)
        if isinstance(error, http.MethodNotAllowed) and error.valid_methods:
            response.headers["Allow"] = ", ".join(error.valid_methods)
        return response

    @app.errorhandler(OperationalError)
    def _database_down(error: OperationalError) -> Response:
        log.error("database unavailable: %s", error.orig)
        return _respond(error, "DATABASE_UNAVAILABLE", "The database is unavailable")

    @app.errorhandler(DataError)
    def _data_error(error: DataError) -> Response:
        # The schemas refuse what the database cannot store (NUL, out-of-range numbers); this is
        # the last line of defence for anything they missed: the client's input, so a 4xx.
        log.warning("database refused a value: %s", error.orig)
        return _respond(error, "VALIDATION_ERROR", "body: a value cannot be stored", field="body")

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        log.exception("unhandled error")
        return _respond(error, "INTERNAL_ERROR", "Internal server error")
