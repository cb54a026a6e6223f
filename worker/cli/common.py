"""What every CLI command shares: one transaction helper, output in text or JSON, errors."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import click
from pydantic import BaseModel
from sqlalchemy.orm import Session

from worker.config import parse_duration
from worker.errors import InvalidAmount
from worker.infra.db import transaction
from worker.models import utcnow

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


def parse_expiry(expires_at: str | None, expires_in: str | None) -> datetime | None:
    """``--expires-at`` (RFC 3339 with an offset) or ``--expires-in`` (30d, 12h, 90m from
    now) as the instant a credit expires; None when neither is given. Whether it lies in the
    future is the ledger's check, the same for every caller."""
    if expires_at is not None and expires_in is not None:
        raise click.UsageError("--expires-at and --expires-in are mutually exclusive")
    if expires_in is not None:
        try:
            return utcnow() + parse_duration(expires_in)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="'--expires-in'") from None
    if expires_at is None:
        return None
    raw = expires_at.strip()
    try:
        # RFC 3339 allows a lower-case t and z; fromisoformat wants T and +00:00.
        parsed = datetime.fromisoformat(raw.upper().replace("Z", "+00:00"))
    except ValueError:
        parsed = None
    try:
        # An edge-of-calendar time in a far offset has no UTC time: refused as malformed.
        in_utc = parsed.astimezone(UTC) if parsed is not None and parsed.tzinfo else None
    except OverflowError:
        in_utc = None
    if in_utc is None or "T" not in raw.upper():
        raise click.BadParameter(
            f"expected an RFC 3339 timestamp with an offset, e.g. 2027-01-31T00:00:00Z, "
            f"got {expires_at!r}",
            param_hint="'--expires-at'",
        )
    return in_utc


def emit(data: BaseModel | dict[str, Any], as_json: bool, text: Callable[[], str]) -> None:
    """Print ``data`` as JSON (the API's shape) or the human-readable ``text()``."""
    if as_json:
        payload = data.model_dump(mode="json") if isinstance(data, BaseModel) else data
        click.echo(json.dumps(payload, indent=2, sort_keys=False))
    else:
        click.echo(text())
