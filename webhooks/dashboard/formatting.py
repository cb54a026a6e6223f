"""How the pages write amounts and times: integers of minor units shown as decimals without
ever becoming floats, timestamps in UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from worker.ledger.schemas import USAGE_SCALE
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


def exact_money(scaled: int, currency: str) -> str:
    """A usage cost in 10**-12 minor units, exactly: ``1234567000000000`` USD ->
    ``12.34567 USD`` (shifted as a decimal, never divided as a float)."""
    try:
        exponent = minor_unit_exponent(currency)
    except ValueError:
        exponent = 0
    digits = len(str(USAGE_SCALE)) - 1
    value = Decimal(scaled).scaleb(-(digits + exponent))
    whole, _, fraction = format(value.normalize() if scaled else Decimal(0), "f").partition(".")
    fraction = fraction.ljust(exponent, "0")
    text = f"{int(whole):,}" + (f".{fraction}" if fraction else "")
    return f"{text} {currency}"


def when(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
