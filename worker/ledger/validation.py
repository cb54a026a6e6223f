"""Input checks shared by every ledger function: typed errors naming the field, nothing written."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from worker.config import Settings
from worker.errors import InvalidAmount, UnsupportedCurrency, ValidationFailed
from worker.infra.db import settings_of
from worker.models import LEDGER_EVENT_TYPES
from worker.money import MAX_AMOUNT

MAX_PAGE_SIZE = 100
# The API's rule for a customer id (its path parameter, webhooks.api.schemas.CustomerPath):
# 1 to 64 characters (the column's width), no NUL, valid Unicode. Ids that arrive in signed
# provider webhooks are held to the same rule before anything is stored under them.
MAX_CUSTOMER_ID_LENGTH = 64


def validate_customer_id(value: Any, field: str = "customer_id") -> str:
    """A customer id the API could address: a string of 1 to 64 characters, no NUL."""
    if not isinstance(value, str) or not value:
        raise ValidationFailed(field, "expected a non-empty string")
    if len(value) > MAX_CUSTOMER_ID_LENGTH:
        raise ValidationFailed(field, f"must be at most {MAX_CUSTOMER_ID_LENGTH} characters")
    if "\x00" in value or not _encodable(value):
        raise ValidationFailed(field, "must not contain NUL or unpaired surrogate characters")
    return value


def is_valid_customer_id(value: Any) -> bool:
    try:
        validate_customer_id(value)
    except ValidationFailed:
        return False
    return True


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def validate_amount(value: Any, field: str = "amount") -> int:
    """A positive integer number of minor units, at most 2**53 - 1; never a float or bool."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidAmount(
            f"must be an integer number of minor units, got {type(value).__name__}", field
        )
    if value <= 0:
        raise InvalidAmount("must be greater than 0", field)
    if value > MAX_AMOUNT:
        raise InvalidAmount(f"must be at most {MAX_AMOUNT}", field)
    return value


def currency_of(settings: Settings, value: Any, field: str = "currency") -> str:
    """The configured currency ``value`` names, upper-cased (``usd`` is ``USD``)."""
    supported = settings.wallet_currencies
    if not isinstance(value, str) or value.upper() not in supported:
        raise UnsupportedCurrency(value, supported, field)
    return value.upper()


def validate_event_type(value: Any) -> str:
    if value not in LEDGER_EVENT_TYPES:
        raise ValidationFailed("event_type", f"must be one of {', '.join(LEDGER_EVENT_TYPES)}")
    return value


def validate_page(page_number: Any, page_size: Any) -> tuple[int, int]:
    for field, value, low, high in (
        ("page_number", page_number, 0, None),
        ("page_size", page_size, 1, MAX_PAGE_SIZE),
    ):
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or value < low
            or (high is not None and value > high)
        ):
            bound = f"between {low} and {high}" if high else f"at least {low}"
            raise ValidationFailed(field, f"must be an integer {bound}")
    return page_number, page_size


def validate_currency(session: Session, value: Any, field: str = "currency") -> str:
    return currency_of(settings_of(session), value, field)
