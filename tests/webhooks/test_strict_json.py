"""The one JSON parser and encoder: orjson where it agrees with Python's json, json where not."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from flask import Flask

from webhooks import strict_json
from webhooks.strict_json import NonFiniteNumber, StrictJSONProvider


@pytest.mark.parametrize(
    "text",
    [
        b'{"amount": 100, "currency": "USD", "reason": "caf\xc3\xa9"}',
        b'{"nested": {"list": [1, 2, {"x": null}]}, "flag": true}',
        b'{"a": 1, "a": 2}',
        b'"\\ud83d\\ude00"',
        b'{"price": 0.25}',
        b"-0",
    ],
)
def test_documents_parse_as_pythons_json_parses_them(text: bytes) -> None:
    assert strict_json.loads(text) == json.loads(text)
    assert strict_json.loads(text.decode()) == json.loads(text)


def test_an_integer_beyond_64_bits_stays_exact() -> None:
    # orjson alone reads it as a float (1e30, rounded).
    assert strict_json.loads(b'{"amount": 1000000000000000000000000000001}') == {
        "amount": 10**30 + 1
    }


@pytest.mark.parametrize(
    ("text", "field"),
    [(b'{"a": NaN}', "a"), (b'{"m": {"x": [1, -Infinity]}}', "m.x.1"), (b'{"b": 1e400}', "b")],
)
def test_a_non_finite_number_is_refused_naming_its_field(text: bytes, field: str) -> None:
    with pytest.raises(NonFiniteNumber) as refused:
        strict_json.loads(text)
    assert refused.value.field == field


@pytest.mark.parametrize("text", [b'"\\ud800"', b"{", b"[1,]", b"\xef\xbb\xbf{}"])
def test_what_pythons_json_refuses_or_accepts_is_decided_by_it(text: bytes) -> None:
    try:
        expected = json.loads(text)
    except ValueError:
        with pytest.raises(ValueError):
            strict_json.loads(text)
    else:
        assert strict_json.loads(text) == expected


@dataclass
class _Point:
    x: int


def test_answers_encode_as_flasks_json_would() -> None:
    app = Flask(__name__)
    ours = StrictJSONProvider(app)
    when = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    value = {
        "when": when,  # Flask's default: an HTTP date, not orjson's ISO form
        "price": Decimal("0.30"),
        "point": _Point(1),
        "big": 2**70,  # beyond orjson: json.dumps writes it
        "text": "café",
    }
    with app.app_context():
        body = ours.response(value).get_data()
    assert body.endswith(b"\n")
    assert json.loads(body) == {
        "when": "Thu, 03 Dec 2026 12:00:00 GMT",
        "price": "0.30",
        "point": {"x": 1},
        "big": 2**70,
        "text": "café",
    }
    assert ours.dumps({"a": 1}, separators=(",", ":")) == '{"a":1}'
    assert ours.dumps({"a": 1}) == '{"a": 1}'  # any other layout: json.dumps's
