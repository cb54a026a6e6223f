"""Standard, finite JSON only.

``NaN``, ``Infinity`` and ``-Infinity`` are not JSON, and a number such as ``1e400`` is JSON
that no float holds: Python's parser reads all of them as non-finite floats, which no database
JSON column and no JSON client accepts back (SQLite would store ``Infinity`` as text). Each is
refused as a validation error naming the field (``NonFiniteNumber``), never stored.

One parser for the API's request bodies (``StrictJSONProvider``, the app's ``app.json``) and
the provider receivers, and one encoder for every JSON answer.

Speed: orjson (Rust) parses and encodes; Python's ``json`` remains the reference for what a
document means. orjson refuses exactly what is refused here (``NaN``, ``Infinity``, numbers
beyond a double, lone surrogates, absurd nesting), but where it differs, it hands over: any
document it cannot parse is parsed again by ``json`` (which names the field or the error as
before), and so is any document holding a float, because orjson reads an integer beyond 64
bits as a float (``10**30`` would arrive as ``1e30``, rounded) where ``json`` keeps it exact.
Encoding falls back to ``json`` for whatever orjson does not take (integers beyond 64 bits,
keys that are not strings); dates, decimals and dataclasses go through Flask's default
conversion either way, so an answer's content is the same with both (orjson writes UTF-8
where ``json`` wrote ``\\u`` escapes: the same JSON text).
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson
from flask import Request, Response
from flask.json.provider import DefaultJSONProvider

from worker.errors import ValidationFailed

NON_FINITE_MESSAGE = (
    "must be a finite number (NaN, Infinity and numbers beyond 1.8e308 are refused)"
)


class NonFiniteNumber(ValueError):
    """The document holds a non-finite number; ``field`` is its dotted path (``metadata.x``)."""

    def __init__(self, field: str) -> None:
        super().__init__(f"{field}: {NON_FINITE_MESSAGE}")
        self.field = field


class _Seen(Exception):
    """Raised by the fast decoder at the first non-finite number (the slow one finds where)."""


class _Marker:
    """Stands for a non-finite number while the slow decoder builds the document."""


def _fast_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Seen
    return value


def _fast_constant(_name: str) -> Any:
    raise _Seen


def _slow_float(text: str) -> float | _Marker:
    value = float(text)
    return value if math.isfinite(value) else _Marker()


# One decoder for every request (json.loads with hooks builds one per call; that costs only
# ~1.4 µs, but there is no reason to). It stops at the first non-finite number; only such a
# document, which is never valid, is parsed a second time to name the field.
_DECODER = json.JSONDecoder(parse_float=_fast_float, parse_constant=_fast_constant)
_LOCATING = json.JSONDecoder(parse_float=_slow_float, parse_constant=lambda _name: _Marker())


def _has_float(value: Any) -> bool:
    if type(value) is float:
        return True
    if type(value) is dict:
        return any(_has_float(item) for item in value.values())
    if type(value) is list:
        return any(_has_float(item) for item in value)
    return False


def loads(text: str | bytes) -> Any:
    """Parse ``text``; raises ``NonFiniteNumber`` (a ``ValueError``) naming the first non-finite
    number's field, ``ValueError`` (``JSONDecodeError``) on anything else but standard JSON, and
    ``RecursionError`` on absurd nesting, which callers turn into a 400."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        pass  # json says what is wrong, as it always did
    else:
        if not _has_float(value):
            return value
    return _reference_loads(text)


def _reference_loads(text: str | bytes) -> Any:
    if isinstance(text, bytes | bytearray):
        text = text.decode(json.detect_encoding(text), "surrogatepass")
    try:
        return _DECODER.decode(text)
    except _Seen:
        raise NonFiniteNumber(_marker_path(_LOCATING.decode(text)) or "body") from None


def _marker_path(value: Any, path: tuple[str, ...] = ()) -> str | None:
    """The dotted path of the first ``_Marker`` in ``value`` (as pydantic names fields)."""
    if isinstance(value, _Marker):
        return ".".join(path) or "body"
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = _marker_path(item, (*path, str(key)))
        if found is not None:
            return found
    return None


# Dates, decimals, dataclasses and str/int/dict/list subclasses reach ``default`` (Flask's
# conversion), as they do with json.dumps: orjson's own forms differ (ISO dates, say).
_PASSTHROUGH = (
    orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)


class StrictJSONProvider(DefaultJSONProvider):
    """Standard JSON only: ``NaN``/``Infinity``/``1e400`` are refused (``NonFiniteNumber``),
    absurd nesting is malformed input (400). Answers are encoded by orjson.

    Python's parser recurses once per nesting level (a 1 MiB ``[[[[...`` would raise
    RecursionError, a 500).
    """

    sort_keys = False

    def _encode(self, obj: Any, option: int) -> bytes | None:
        try:
            return orjson.dumps(obj, default=self.default, option=_PASSTHROUGH | option)
        except TypeError:
            return None  # beyond orjson (a 65-bit integer, an int key): json.dumps decides

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        # Only the compact form is orjson's; any other layout asked for is json.dumps's.
        if kwargs == {"separators": (",", ":")}:
            encoded = self._encode(obj, 0)
            if encoded is not None:
                return encoded.decode()
        return super().dumps(obj, **kwargs)

    def response(self, *args: Any, **kwargs: Any) -> Response:
        obj = self._prepare_response_obj(args, kwargs)
        pretty = (self.compact is None and self._app.debug) or self.compact is False
        option = orjson.OPT_APPEND_NEWLINE | (orjson.OPT_INDENT_2 if pretty else 0)
        encoded = self._encode(obj, option)
        if encoded is None:
            return super().response(*args, **kwargs)
        return self._app.response_class(encoded, mimetype=self.mimetype)

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        try:
            if kwargs:  # nobody passes any today; honour them rather than drop them
                return json.loads(
                    s, parse_float=_fast_float, parse_constant=_fast_constant, **kwargs
                )
            return loads(s)
        except _Seen:
            raise NonFiniteNumber("body") from None
        except RecursionError as exc:
            raise ValueError("JSON nested too deeply") from exc


class StrictJSONRequest(Request):
    """The app's request class: a non-finite number is a 422 naming its field, where any other
    undecodable body stays werkzeug's 400 (``guards.require_json_body`` names it)."""

    def on_json_loading_failed(self, e: ValueError | None) -> Any:
        if isinstance(e, NonFiniteNumber):
            raise ValidationFailed(e.field, NON_FINITE_MESSAGE) from None
        return super().on_json_loading_failed(e)
