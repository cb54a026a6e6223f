"""Currencies, minor units and the few conversions money needs.

Amounts are always ``int`` minor units. Fractions (FX rates, usage prices) are ``Decimal``
and every conversion back to minor units rounds explicitly, towards zero.
"""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal

# Largest amount accepted anywhere: integers above 2**53 - 1 lose precision in JSON clients
# (JavaScript numbers), so a wallet API that promises exact money cannot accept them.
MAX_AMOUNT = 2**53 - 1

# ISO 4217 minor-unit exponents. Most active codes use 2; the exceptions are listed.
_EXPONENT_0 = set("BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF".split())
_EXPONENT_3 = set("BHD IQD JOD KWD LYD OMR TND".split())
_EXPONENT_4 = {"CLF", "UYW"}
_EXPONENT_2 = set(
    """AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN BWP
    BYN BZD CAD CDF CHE CHF CHW CNY COP COU CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD
    FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD
    KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD
    NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP
    SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD USN UYU UZS VES
    VED WST XCD YER ZAR ZMW ZWG""".split()
)


def minor_unit_exponent(currency: str) -> int:
    """Number of decimal places of ``currency``'s minor unit (USD 2, JPY 0, KWD 3)."""
    if currency in _EXPONENT_2:
        return 2
    if currency in _EXPONENT_0:
        return 0
    if currency in _EXPONENT_3:
        return 3
    if currency in _EXPONENT_4:
        return 4
    raise ValueError(f"unknown ISO 4217 currency {currency!r}")


def is_known_currency(currency: str) -> bool:
    try:
        minor_unit_exponent(currency)
    except ValueError:
        return False
    return True


def to_usd_cents(amount: int, currency: str, rate_to_usd: Decimal) -> Decimal:
    """Exact USD-cent value of ``amount`` minor units of ``currency`` (not yet rounded)."""
    scale = Decimal(10) ** (2 - minor_unit_exponent(currency))
    return Decimal(amount) * rate_to_usd * scale


def floor_cents(value: Decimal) -> int:
    """Round a non-negative Decimal down to whole minor units."""
    return int(value.quantize(Decimal(1), rounding=ROUND_DOWN))
