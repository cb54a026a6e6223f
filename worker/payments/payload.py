"""Reading provider payloads: each helper names the field it refused."""

from __future__ import annotations

from typing import Any

from worker.errors import ValidationFailed


def _obj(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValidationFailed(field, "expected an object")
    return value


def _str(container: dict[str, Any], key: str, field: str) -> str:
    value = container.get(key)
    if not isinstance(value, str) or not value or len(value) > 255:
        raise ValidationFailed(field, "expected a non-empty string")
    if "\x00" in value:  # PostgreSQL cannot store it in a text column
        raise ValidationFailed(field, "must not contain NUL characters")
    return value


def is_valid_key(value: Any) -> bool:
    """Whether ``value`` passes ``_str`` (a provider's id: payment, refund)."""
    return isinstance(value, str) and 0 < len(value) <= 255 and "\x00" not in value


def _minor_units(value: Any, field: str, *, allow_zero: bool = False) -> int:
    """An integer amount, or a numeric string of one (metadata values are strings)."""
    if isinstance(value, bool):
        raise ValidationFailed(field, "expected an integer amount in minor units")
    if isinstance(value, str) and value.strip().isdigit() and value.strip().isascii():
        value = int(value.strip())
    if not isinstance(value, int) or value < 0 or (value == 0 and not allow_zero):
        raise ValidationFailed(field, f"expected a positive integer in minor units, got {value!r}")
    return value


def _currency(value: Any, field: str) -> str:
    if not isinstance(value, str) or len(value) != 3 or not value.isalpha():
        raise ValidationFailed(field, f"expected an ISO 4217 code, got {value!r}")
    return value.upper()
