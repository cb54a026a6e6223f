"""Standard JSON only: ``NaN``, ``Infinity`` and ``-Infinity`` are malformed input.

Python's parser accepts them, but no database JSON column and no JSON client accepts them back.
One parser for the API's request bodies (``StrictJSONProvider``, the app's ``app.json``) and
the provider receivers.
"""

from __future__ import annotations

import json
from typing import Any

from flask.json.provider import DefaultJSONProvider


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# One decoder for every request (json.loads with parse_constant builds one per call; that
# costs only ~1.4 µs, but there is no reason to).
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def loads(text: str | bytes) -> Any:
    """Parse ``text``; raises ``ValueError`` (``JSONDecodeError``) on anything but standard
    JSON, and ``RecursionError`` on absurd nesting, which callers turn into a 400."""
    if isinstance(text, bytes | bytearray):
        text = text.decode(json.detect_encoding(text), "surrogatepass")
    return _DECODER.decode(text)


class StrictJSONProvider(DefaultJSONProvider):
    """Standard JSON only: ``NaN``/``Infinity`` and absurd nesting are malformed input (400).

    Python's parser accepts ``NaN`` (which no database JSON column or JSON client accepts back)
    and recurses once per nesting level (a 1 MiB ``[[[[...`` would raise RecursionError, a 500).
    """

    sort_keys = False

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        try:
            if kwargs:  # nobody passes any today; honour them rather than drop them
                return json.loads(s, parse_constant=_reject_constant, **kwargs)
            return loads(s)
        except RecursionError as exc:
            raise ValueError("JSON nested too deeply") from exc
