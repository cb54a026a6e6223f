"""``wallet credit --expires-at | --expires-in | --category``: the lot it creates, and every bad
value as one line on stderr with exit status 2 (in process and through the real entry point)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from tests.support.cli import run_cli_process
from worker.config import Settings
from worker.models import CreditLot, utcnow


@pytest.fixture
def customer_id(cli) -> str:
    """A customer created through the CLI."""
    result = cli("customers", "create", "--email", "ada@example.com", "--name", "Ada", "--json")
    assert result.code == 0, result.err
    return result.json()["customer_id"]


def lots(tx) -> list[CreditLot]:
    with tx() as s:
        return list(s.scalars(select(CreditLot).order_by(CreditLot.seq)))


def test_credit_expires_at_and_category_make_that_lot(cli, tx, customer_id: str) -> None:
    result = cli(
        "wallet", "credit", customer_id, "1500", "--currency", "USD",
        "--expires-at", "2031-03-01T09:00:00+01:00", "--category", "promotional",
    )  # fmt: skip
    assert result.code == 0, result.err
    assert result.out.strip().endswith(": USD balance 1500")
    [lot] = lots(tx)
    assert (lot.amount, lot.remaining, lot.category) == (1500, 1500, "promotional")
    assert lot.expires_at == datetime(2031, 3, 1, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "raw, length",
    [("30d", timedelta(days=30)), ("12h", timedelta(hours=12)), ("90m", timedelta(minutes=90))],
)
def test_credit_expires_in_counts_from_now(cli, tx, customer_id: str, raw, length) -> None:
    before = utcnow()
    result = cli("wallet", "credit", customer_id, "10", "--currency", "USD", "--expires-in", raw)
    after = utcnow()
    assert result.code == 0, result.err
    [lot] = lots(tx)
    assert before + length <= lot.expires_at <= after + length
    assert lot.category == "paid"


def test_credit_without_flags_never_expires(cli, tx, customer_id: str) -> None:
    assert cli("wallet", "credit", customer_id, "10", "--currency", "USD").code == 0
    [lot] = lots(tx)
    assert (lot.category, lot.expires_at) == ("paid", None)


def test_reused_key_with_another_expiry_names_it(cli, tx, customer_id: str) -> None:
    args = ["wallet", "credit", customer_id, "10", "--currency", "USD", "--idempotency-key", "g1"]
    assert cli(*args, "--expires-at", "2031-01-01T00:00:00Z").code == 0
    same = cli(*args, "--expires-at", "2031-01-01T00:00:00Z")
    assert (same.code, "already used" in same.err) == (2, True)
    other = cli(*args, "--expires-at", "2031-02-01T00:00:00Z")
    assert other.code == 2
    assert other.err.strip().endswith("already used with different expires_at")
    assert len(lots(tx)) == 1


def test_json_output_is_the_wallet(cli, customer_id: str) -> None:
    result = cli(
        "wallet", "credit", customer_id, "10", "--currency", "USD", "--expires-in", "1d", "--json"
    )
    assert result.code == 0, result.err
    assert (result.json()["balance"], result.json()["currency"]) == (10, "USD")


BAD_TERMS = [
    (["--expires-at", "2031-01-01"], "Invalid value for '--expires-at'"),
    (["--expires-at", "2031-01-01T00:00:00"], "Invalid value for '--expires-at'"),
    (["--expires-at", "soon"], "Invalid value for '--expires-at'"),
    (["--expires-at", "9999-12-31T23:59:59-23:59"], "Invalid value for '--expires-at'"),
    (["--expires-at", "2020-01-01T00:00:00Z"], "expires_at: must be in the future"),
    (["--expires-in", "30"], "Invalid value for '--expires-in'"),
    (["--expires-in", "3w"], "Invalid value for '--expires-in'"),
    (["--expires-in", "0d"], "Invalid value for '--expires-in'"),
    (["--expires-in", "-5d"], "Invalid value for '--expires-in'"),
    (["--expires-in", "99999999d"], "Invalid value for '--expires-in'"),
    (["--expires-in", "1.5d"], "Invalid value for '--expires-in'"),
    (
        ["--expires-in", "30d", "--expires-at", "2031-01-01T00:00:00Z"],
        "--expires-at and --expires-in are mutually exclusive",
    ),
    (["--category", "gift"], "Invalid value for '--category'"),
]


@pytest.mark.parametrize(("terms", "message"), BAD_TERMS, ids=lambda v: " ".join(v)[:40])
def test_bad_lot_terms_are_one_line_exit_2(cli, tx, customer_id: str, terms, message) -> None:
    result = cli("wallet", "credit", customer_id, "10", "--currency", "USD", *terms)
    assert (result.code, result.out) == (2, "")
    assert len(result.err.splitlines()) == 1
    assert result.err.startswith("billing-worker: ")
    assert message in result.err
    assert lots(tx) == []


@pytest.mark.parametrize(
    "terms, field",
    [(["--expires-in", "30d"], "expires_at"), (["--category", "promotional"], "category")],
)
def test_a_debit_refuses_lot_terms_naming_the_field(cli, customer_id: str, terms, field) -> None:
    assert cli("wallet", "credit", customer_id, "100", "--currency", "USD").code == 0
    result = cli("wallet", "debit", customer_id, "10", "--currency", "USD", *terms)
    assert result.code == 2
    assert result.err.strip() == f"billing-worker: {field}: credits only"


def test_bad_expiry_through_the_real_entry_point(settings: Settings, customer_id: str) -> None:
    done = run_cli_process(
        settings.database_url, "wallet", "credit", customer_id, "5", "--currency", "USD",
        "--expires-in", "soon",
    )  # fmt: skip
    assert (done.returncode, done.stdout) == (2, "")
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith("billing-worker: Invalid value for '--expires-in'")
