"""Usage prices from the TOML file at ``PRICING_FILE``, and exact per-event costs.

```toml
[prices.api_call]
currency = "USD"
unit_amount = "0.3"        # minor units per unit, a decimal string
[prices.llm_tokens]
currency = "USD"
unit_amount = "0.002"
quantity_key = "tokens"    # metadata key holding the unit count; without it, 1 unit per event
```

Costs are exact: ``unit_amount * quantity`` as a ``Decimal``, stored as an integer count of
10**-12 minor units (``USAGE_SCALE``). Nothing is ever rounded. A price with more than 12
decimal places cannot be represented and is refused when the file is loaded; a quantity whose
product with the price needs more than 12 decimal places makes that one event ``invalid``
(with the reason) rather than being rounded, because a silently rounded cost is lost money.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from typing import Any

from worker.config import ConfigError, Settings
from worker.ledger.schemas import USAGE_SCALE

# cost_scaled is a signed 64-bit column: one event costs at most this many 10**-12 units
# (about 9.2 million minor units, e.g. $92,233.72).
MAX_COST_SCALED = 2**63 - 1
_SCALE = Decimal(USAGE_SCALE)
_PRICE_KEYS = {"currency", "unit_amount", "quantity_key"}


class InvalidQuantity(ValueError):
    """The event's quantity cannot be priced; the message is the event's ``error``."""


@dataclass(frozen=True)
class Price:
    event_name: str
    currency: str
    unit_amount: Decimal  # minor units per unit
    quantity_key: str | None = None

    def quantity(self, metadata: Mapping[str, Any] | None) -> Decimal:
        """The number of units an event counts (1 without a ``quantity_key``)."""
        if self.quantity_key is None:
            return Decimal(1)
        key = self.quantity_key
        if not metadata or key not in metadata:
            raise InvalidQuantity(f"metadata.{key}: missing (the price counts units from it)")
        raw = metadata[key]
        # bool is an int in Python; "true" tokens is not a quantity.
        if isinstance(raw, bool) or not isinstance(raw, int | float | str | Decimal):
            raise InvalidQuantity(f"metadata.{key}: not a number ({raw!r})")
        try:
            # A JSON float arrives as a Python float; its shortest repr is the text the client
            # sent for any number it could have meant exactly, so parse that, not the binary.
            value = Decimal(repr(raw) if isinstance(raw, float) else str(raw).strip())
        except InvalidOperation:
            raise InvalidQuantity(f"metadata.{key}: not a number ({raw!r})") from None
        if not value.is_finite():
            raise InvalidQuantity(f"metadata.{key}: not a finite number ({raw!r})")
        if value < 0:
            raise InvalidQuantity(f"metadata.{key}: negative quantity ({raw!r})")
        return value

    def cost_scaled(self, metadata: Mapping[str, Any] | None) -> int:
        """The event's exact cost in 10**-12 minor units; raises ``InvalidQuantity``."""
        exact = self.unit_amount * self.quantity(metadata) * _SCALE
        if exact != exact.to_integral_value():
            raise InvalidQuantity(
                f"metadata.{self.quantity_key}: cost {self.unit_amount} x "
                f"{metadata[self.quantity_key] if metadata else 1} has more than 12 decimal "
                "places of a minor unit and cannot be billed exactly"
            )
        scaled = int(exact)
        if scaled > MAX_COST_SCALED:
            raise InvalidQuantity(
                f"metadata.{self.quantity_key}: cost exceeds the per-event maximum of "
                f"{MAX_COST_SCALED // USAGE_SCALE} minor units"
            )
        return scaled


@dataclass(frozen=True)
class Pricing:
    prices: Mapping[str, Price]

    def get(self, event_name: str) -> Price | None:
        return self.prices.get(event_name)


NO_PRICES = Pricing(prices={})


def parse(
    data: Mapping[str, Any], currencies: tuple[str, ...], source: str = "PRICING_FILE"
) -> Pricing:
    """Validate a decoded pricing document; every problem is a ``ConfigError`` naming it."""
    unknown = set(data) - {"prices"}
    if unknown:
        raise ConfigError(f"{source}: unknown top-level key(s) {', '.join(sorted(unknown))}")
    tables = data.get("prices", {})
    if not isinstance(tables, dict):
        raise ConfigError(f"{source}: [prices] must be a table of [prices.<event_name>] tables")
    prices: dict[str, Price] = {}
    for name, table in tables.items():
        where = f"{source}: [prices.{name}]"
        if not isinstance(table, dict):
            raise ConfigError(f"{where} must be a table")
        extra = set(table) - _PRICE_KEYS
        if extra:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(extra))}")
        currency = table.get("currency")
        if not isinstance(currency, str) or currency.upper() not in currencies:
            raise ConfigError(
                f"{where}: currency must be one of {', '.join(currencies)} "
                f"(WALLET_CURRENCIES), got {currency!r}"
            )
        raw = table.get("unit_amount")
        # A TOML float (0.1) is already binary and inexact; only a string states an exact price.
        if not isinstance(raw, str | int) or isinstance(raw, bool):
            raise ConfigError(
                f'{where}: unit_amount must be a decimal string such as "0.002", got {raw!r}'
            )
        try:
            unit_amount = Decimal(str(raw).strip())
        except InvalidOperation:
            raise ConfigError(f"{where}: unit_amount {raw!r} is not a decimal number") from None
        if not unit_amount.is_finite() or unit_amount < 0:
            raise ConfigError(f"{where}: unit_amount must be a finite number >= 0, got {raw!r}")
        if (unit_amount * _SCALE) != (unit_amount * _SCALE).to_integral_value():
            raise ConfigError(
                f"{where}: unit_amount {raw!r} has more than 12 decimal places "
                "(costs are exact to 10**-12 of a minor unit)"
            )
        key = table.get("quantity_key")
        if key is not None and (not isinstance(key, str) or not key):
            raise ConfigError(f"{where}: quantity_key must be a non-empty string")
        prices[name] = Price(name, currency.upper(), unit_amount, key)
    return Pricing(prices=prices)


def load(path: str | Path, currencies: tuple[str, ...]) -> Pricing:
    """Read and validate the pricing file; raises ``ConfigError`` naming the problem."""
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"PRICING_FILE: {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"PRICING_FILE: cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"PRICING_FILE: {path} is not valid TOML: {exc}") from None
    return parse(data, currencies, source=f"PRICING_FILE {path}")


@lru_cache(maxsize=8)
def _cached(path: str, currencies: tuple[str, ...]) -> Pricing:
    return load(path, currencies)


def get_pricing(settings: Settings) -> Pricing:
    """The process's prices (read once per file); no file means nothing is priced."""
    if not settings.pricing_file:
        return NO_PRICES
    return _cached(settings.pricing_file, settings.wallet_currencies)
