"""Reading provider payloads: each helper names the field it refused."""

from __future__ import annotations

from datetime import UTC, datetime
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
    return value


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


def _timestamp(value: Any, field: str) -> datetime:
    """An RFC 3339 timestamp with an offset (``2026-11-26T10:14:58.000000Z``)."""
    parsed = None
    if isinstance(value, str) and "T" in value.upper():
        try:
            parsed = datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
        except ValueError:
            parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise ValidationFailed(
            field, f"expected an RFC 3339 timestamp with an offset, got {value!r}"
        )
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # the edge of the calendar in a far offset has no UTC time
        raise ValidationFailed(field, f"out of range: {value!r}") from None
