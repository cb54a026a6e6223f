"""What every CLI command shares: one transaction helper, output in text or JSON, errors."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
from pydantic import BaseModel
from sqlalchemy.orm import Session

from worker.errors import InvalidAmount
from worker.infra.db import transaction

# The actor of everything done through the CLI: whoever can run it can reach the database.
CLI_ACTOR = "cli"

json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print the JSON object the HTTP API returns."
)

# Commands whose AMOUNT may look like an option ("-5") still get it as an argument, so the
# error says what is wrong with the amount instead of "no such option".
AMOUNT_COMMAND = {"ignore_unknown_options": True}


@contextmanager
def session() -> Iterator[Session]:
    with transaction() as s:
        yield s


def parse_amount(raw: str, field: str = "amount") -> int:
    """Parse a CLI amount: whole minor units, no decimals, signs or exponents."""
    if not re.fullmatch(r"-?[0-9]+", raw.strip()):
        raise InvalidAmount(f"must be a whole number of minor units, got {raw!r}", field)
    from worker.ledger import validate_amount

    return validate_amount(int(raw), field)


def emit(data: BaseModel | dict[str, Any], as_json: bool, text: Callable[[], str]) -> None:
    """Print ``data`` as JSON (the API's shape) or the human-readable ``text()``."""
    if as_json:
        payload = data.model_dump(mode="json") if isinstance(data, BaseModel) else data
        click.echo(json.dumps(payload, indent=2, sort_keys=False))
    else:
        click.echo(text())
