"""Request shapes of the HTTP API (responses: ``worker.ledger.schemas``, shared with the CLI).

Field names and types follow Dodo Payments' customer-wallet API (the ``dodopayments`` SDK's
``*_params`` types), so its clients send exactly these. Every string refuses NUL characters:
PostgreSQL cannot store them, and a client must get a 422 naming the field, not a 500.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StrictInt,
    StrictStr,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from worker.ledger import MAX_CUSTOMER_ID_LENGTH, MAX_PAGE_SIZE
from worker.money import MAX_AMOUNT

NO_NUL = r"^[^\x00]*$"
# page_number * page_size must stay far inside a 64-bit OFFSET.
MAX_PAGE_NUMBER = 2**31 - 1


def _text(min_length: int = 0, max_length: int = 255, **extra: Any) -> Any:
    return Annotated[
        StrictStr, Field(min_length=min_length, max_length=max_length, pattern=NO_NUL, **extra)
    ]


Amount = Annotated[
    StrictInt,
    Field(
        gt=0,
        le=MAX_AMOUNT,
        description="Minor units (cents for USD, paise for INR): an integer from 1 to 2^53-1, "
        "never a float, string or boolean.",
        examples=[10000],
    ),
]
# create_app() lists the configured currencies (WALLET_CURRENCIES) as this field's enum in
# /openapi.json; it finds the fields by this pattern.
CURRENCY_PATTERN = r"^[A-Z]{3}$"
Currency = Annotated[
    StrictStr,
    Field(
        pattern=CURRENCY_PATTERN,
        description="ISO 4217 code of a configured wallet currency (WALLET_CURRENCIES), "
        "upper case as in Dodo's API.",
    ),
]


def _metadata_value(value: Any) -> Any:
    # One clear error per bad value instead of pydantic's one-per-union-member noise. NUL is
    # fine here: metadata is stored as JSON text, where it is the escape \u0000.
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    if isinstance(value, str) and _encodable(value):
        return value
    raise PydanticCustomError(
        "metadata_value", "must be a string, a finite number, a boolean or null"
    )


def _metadata_key(value: Any) -> str:
    if isinstance(value, str) and _encodable(value):
        return value
    raise PydanticCustomError("metadata_key", "keys must be valid Unicode strings")


def _encodable(value: str) -> bool:
    # A lone UTF-16 surrogate ("\ud800") parses in Python but no database stores it.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


MetadataValue = Annotated[
    str | int | float | bool | None,
    PlainValidator(_metadata_value),
    WithJsonSchema(
        {"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}, {"type": "null"}]}
    ),
]
MetadataKey = Annotated[StrictStr, AfterValidator(_metadata_key)]
# Dodo's limits for customer metadata: at most 50 keys of up to 40 characters, string values
# of up to 500 characters. Unbounded, one customer row could carry a megabyte of JSON that every
# read of the customer then returns.
MAX_METADATA_KEYS = 50
MAX_METADATA_KEY_LENGTH = 40
MAX_METADATA_VALUE_LENGTH = 500


def _metadata_bounds(value: dict[str, Any]) -> dict[str, Any]:
    if len(value) > MAX_METADATA_KEYS:
        raise PydanticCustomError(
            "metadata_size", "at most {limit} keys", {"limit": MAX_METADATA_KEYS}
        )
    for key, item in value.items():
        if len(key) > MAX_METADATA_KEY_LENGTH:
            raise PydanticCustomError(
                "metadata_key",
                "keys must be at most {limit} characters",
                {"limit": MAX_METADATA_KEY_LENGTH},
            )
        if isinstance(item, str) and len(item) > MAX_METADATA_VALUE_LENGTH:
            raise PydanticCustomError(
                "metadata_value",
                "values must be at most {limit} characters",
                {"limit": MAX_METADATA_VALUE_LENGTH},
            )
    return value


# Bounds are checked on the whole object, so the error names `metadata` (the field a client
# set), not a key the client may not even be able to print.
Metadata = Annotated[
    dict[MetadataKey, MetadataValue],
    AfterValidator(_metadata_bounds),
    WithJsonSchema(
        {
            "type": "object",
            "maxProperties": MAX_METADATA_KEYS,
            "propertyNames": {"maxLength": MAX_METADATA_KEY_LENGTH},
            "additionalProperties": {
                "anyOf": [
                    {"type": "string", "maxLength": MAX_METADATA_VALUE_LENGTH},
                    {"type": "number"},
                    {"type": "boolean"},
                    {"type": "null"},
                ]
            },
        }
    ),
]


def _timestamp(value: Any) -> datetime:
    # pydantic's lax datetime also takes numbers as Unix times ("0.5"); the spec says RFC 3339.
    if isinstance(value, datetime):
        parsed = value
    else:
        try:
            parsed = datetime.fromisoformat(str(value).upper().replace("Z", "+00:00"))
        except ValueError:
            parsed = None
        if parsed is None or not isinstance(value, str) or "T" not in value.upper():
            raise PydanticCustomError(
                "timestamp", "must be an RFC 3339 timestamp, e.g. 2025-01-31T00:00:00Z"
            )
    if parsed.tzinfo is None:
        raise PydanticCustomError("timestamp", "must include a UTC offset, e.g. Z or +05:30")
    return parsed


Timestamp = Annotated[
    datetime,
    PlainValidator(_timestamp),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


def _in_utc(value: datetime) -> datetime:
    # An instant at the edge of the calendar in a far offset (9999-12-31T23:59-23:59) has no
    # UTC time; without this the ledger's conversion would raise a 500.
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise PydanticCustomError("timestamp", "is out of range") from None


UtcTimestamp = Annotated[Timestamp, AfterValidator(_in_utc)]


class _Body(BaseModel):
    # Unknown fields are ignored, as Dodo's API does (the SDK may send newer optional fields).
    model_config = ConfigDict(extra="ignore")


# One rule for a customer id wherever one arrives (path, usage events, provider webhooks).
CustomerId = _text(1, MAX_CUSTOMER_ID_LENGTH, description="The customer's id (`cus_...`).")


class CustomerPath(BaseModel):
    customer_id: CustomerId


class PageQuery(BaseModel):
    page_number: int = Field(
        0, ge=0, le=MAX_PAGE_NUMBER, description="0-based page index (default 0)."
    )
    page_size: int = Field(
        10, ge=1, le=MAX_PAGE_SIZE, description=f"Items per page (default 10, max {MAX_PAGE_SIZE})."
    )


class CustomerListQuery(PageQuery):
    email: _text(0, 320, description="Only the customer with this email (case-insensitive).") = None
    name: _text(0, 500, description="Customers whose name contains this (case-insensitive).") = None
    created_at_gte: Timestamp | None = Field(
        None, description="Only customers created at or after this RFC 3339 timestamp."
    )
    created_at_lte: Timestamp | None = Field(
        None, description="Only customers created at or before this RFC 3339 timestamp."
    )


class CustomerCreate(_Body):
    email: Annotated[
        StrictStr,
        Field(
            min_length=3,
            max_length=320,
            pattern=r"^[^@\s\x00]+@[^@\s\x00]+$",
            examples=["ada@example.com"],
        ),
    ]
    name: _text(1, 500, examples=["Ada Lovelace"])
    phone_number: _text(0, 64) | None = None
    metadata: Metadata | None = Field(
        None, description="Free-form key/value pairs (strings, numbers, booleans)."
    )


class CustomerPatch(_Body):
    name: _text(1, 500) = Field(None, description="A new name (cannot be null).")
    phone_number: _text(0, 64) | None = Field(None, description="A new phone number; null clears.")
    metadata: Metadata | None = Field(None, description="Replaces the metadata; null clears it.")
    low_balance_thresholds: (
        dict[Currency, Annotated[StrictInt, Field(ge=0, le=MAX_AMOUNT)]] | None
    ) = Field(
        None,
        description="Per-currency low-balance threshold overrides in minor units, "
        '{"USD": 500}; null removes the overrides.',
    )
    email: None = Field(
        None,
        description="An email cannot be changed (it identifies the customer); sending one is "
        "refused with 422.",
    )

    @field_validator("email", mode="before")
    @classmethod
    def _email_is_immutable(cls, value: Any) -> None:
        if value is not None:
            raise PydanticCustomError(
                "immutable", "cannot be changed; create a new customer instead"
            )
        return None

    @field_validator("name", mode="before")
    @classmethod
    def _name_not_null(cls, value: Any) -> Any:
        if value is None:
            raise PydanticCustomError("not_null", "cannot be null")
        return value


class LedgerEntryCreate(_Body):
    amount: Amount
    currency: Currency
    entry_type: Literal["credit", "debit"] = Field(description="Type of ledger entry.")
    idempotency_key: _text(1, 255) | None = Field(
        None,
        description="Retrying with the same key and parameters changes nothing and answers "
        "409; the same key with other parameters answers 422.",
    )
    reason: _text(0, 1000) | None = Field(None, description="Why, for the ledger history.")
    # Not in Dodo's API (its SDK sends them with ``extra_body``): the terms of the credit's lot.
    expires_at: UtcTimestamp | None = Field(
        None,
        description="Credits only: when the credit lapses, an RFC 3339 timestamp with an "
        "offset, in the future. What is left of it then is taken by an `expiration` entry; "
        "until then debits spend the soonest-expiring credit first. Omitted: never expires.",
    )
    category: Literal["paid", "promotional"] | None = Field(
        None,
        description="Credits only: `paid` (the default) or `promotional`; among credits "
        "expiring together, promotional ones are spent first.",
    )


class LedgerEntryListQuery(PageQuery):
    currency: Currency = Field(None, description="Only entries in this currency.")


class LedgerEntryPath(CustomerPath):
    entry_id: _text(1, 64, description="The ledger entry's id (`wle_...`).")


class CreditLotListQuery(PageQuery):
    currency: Currency = Field(None, description="Only lots in this currency.")
    status: Literal["active", "expired", "consumed"] = Field(
        None,
        description="Only lots in this state: `active` (spendable credit left), `expired` "
        "(past `expires_at`) or `consumed` (spent before it expired).",
    )


class HoldCreate(_Body):
    amount: Amount
    currency: Currency
    idempotency_key: _text(1, 255) | None = Field(
        None,
        description="Retrying with the same key and parameters answers the same hold; the "
        "same key with other parameters answers 422.",
    )
    reason: _text(0, 1000) | None = Field(None, description="Why, kept on the hold.")
    reference_object_id: _text(0, 255) | None = Field(
        None, description="Your own reference (a request id, say)."
    )
    expires_in_seconds: StrictInt | None = Field(
        None,
        gt=0,
        le=7 * 24 * 3600,
        description="How long it reserves (default HOLD_TTL_SECONDS, 900); past it, it can "
        "no longer be captured and `release-expired-holds` releases it.",
    )


class HoldCapture(_Body):
    """The body is optional: no body captures the whole hold."""

    amount: Amount | None = Field(
        None, description="What to debit, at most the hold (default: all of it)."
    )

    @model_validator(mode="before")
    @classmethod
    def _no_body(cls, value: Any) -> Any:
        return {} if value is None else value


class HoldPath(CustomerPath):
    hold_id: _text(1, 64, description="The hold's id (`hold_...`).")


class HoldListQuery(PageQuery):
    currency: Currency = Field(None, description="Only holds in this currency.")
    status: Literal["active", "captured", "released", "expired"] = Field(
        None, description="Only holds in this state."
    )
    kind: Literal["hold", "dispute"] = Field(None, description="Only holds of this kind.")
