"""How the pages write amounts and times: integers of minor units shown as decimals without
ever becoming floats, timestamps in UTC."""

from __future__ import annotations

from datetime import UTC, datetime

from worker.money import minor_unit_exponent


def decimal_text(amount: int, currency: str) -> str:
    """``123456`` USD -> ``1,234.56`` (integer arithmetic: no float near money)."""
    try:
        exponent = minor_unit_exponent(currency)
    except ValueError:
        exponent = 0
    sign = "-" if amount < 0 else ""
    whole, fraction = divmod(abs(amount), 10**exponent)
    text = f"{whole:,}"
    return sign + (f"{text}.{fraction:0{exponent}d}" if exponent else text)


def money(amount: int, currency: str) -> str:
    return f"{decimal_text(amount, currency)} {currency}"


def when(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
