"""``wallet lots``, ``report expired`` and ``wallet show``'s expiry summary, in text and --json,
and their bad input: one line on stderr, exit 2."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.support.cli import run_cli_process
from tests.support.lots import DAY, credit, debit, expire, expiring_lot, wait_until_past
from worker import ledger
from worker.config import Settings
from worker.ledger.schemas import iso
from worker.models import utcnow


@pytest.fixture
def customer_id(tx) -> str:
    with tx() as s:
        return ledger.create_customer(s, email="cli-lots@example.com", name="C")[0].customer_id


def test_wallet_lots_in_text_and_json_with_filters(cli, tx, customer_id) -> None:
    left, moment = expiring_lot(tx, customer_id, 50, category="promotional")
    wait_until_past(moment)
    _, spent = credit(tx, customer_id, 20)
    debit(tx, customer_id, 20)
    expires = utcnow() + DAY
    _, active = credit(tx, customer_id, 300, expires_at=expires)
    _, inr = credit(tx, customer_id, 9000, currency="INR")
    shown = cli("wallet", "lots", customer_id)
    assert shown.code == 0, shown.err
    assert shown.out.splitlines() == [
        f"{inr} INR active   paid        remaining 9000/9000 expired 0 expires never",
        f"{active} USD active   paid        remaining 300/300 expired 0 expires {iso(expires)}",
        f"{spent} USD consumed paid        remaining 0/20 expired 0 expires never",
        f"{left} USD expired  promotional remaining 50/50 expired 0 expires {iso(moment)}",
    ]
    data = cli("wallet", "lots", customer_id, "--currency", "usd", "--json").json()
    assert [(x["lot_id"], x["status"]) for x in data["items"]] == [
        (active, "active"),
        (spent, "consumed"),
        (left, "expired"),
    ]
    assert data["items"][0]["expires_at"] == iso(expires)
    expired = cli("wallet", "lots", customer_id, "--status", "expired", "--json").json()
    assert [x["lot_id"] for x in expired["items"]] == [left]
    paged = cli("wallet", "lots", customer_id, "--page-size", "1", "--page-number", "1", "--json")
    assert [x["lot_id"] for x in paged.json()["items"]] == [active]
    none = cli(
        "wallet",
        "lots",
        customer_id,
        "--status",
        "active",
        "--currency",
        "INR",
        "--page-number",
        "5",
    )
    assert none.out.strip() == "no lots"


def test_wallet_show_adds_what_expires_soon(cli, tx, customer_id) -> None:
    soonest = utcnow() + DAY
    credit(tx, customer_id, 100, expires_at=soonest)
    credit(tx, customer_id, 400)
    shown = cli("wallet", "show", customer_id)
    assert shown.out.splitlines() == [
        f"USD             500  pending_usage 0  expiring_soon 100  next_expiry {iso(soonest)}",
        "INR               0  pending_usage 0",
        "total_balance_usd 500",
    ]
    usd, inr = cli("wallet", "show", customer_id, "--json").json()["items"]
    assert (usd["expiring_soon"], usd["next_expiry_at"]) == (100, iso(soonest))
    assert (inr["expiring_soon"], inr["next_expiry_at"]) == (0, None)


def test_report_expired_splits_paid_and_promotional(cli, tx, customer_id) -> None:
    paid, m1 = expiring_lot(tx, customer_id, 120)
    promo, m2 = expiring_lot(tx, customer_id, 80, category="promotional")
    inr, m3 = expiring_lot(tx, customer_id, 3000, currency="INR")
    debit(tx, customer_id, 20)  # from ``paid``, while live
    wait_until_past(max(m1, m2, m3))
    start = utcnow()
    expire(tx, customer_id, paid)
    expire(tx, customer_id, promo)
    expire(tx, customer_id, inr, currency="INR")
    end = utcnow() + timedelta(seconds=1)
    report = cli("report", "expired", "--from", iso(start), "--to", iso(end), "--json")
    assert report.code == 0, report.err
    assert report.json() == {
        "start": iso(start),
        "end": iso(end),
        "currencies": [
            {"currency": "USD", "paid": 100, "promotional": 80, "total": 180, "lots": 2},
            {"currency": "INR", "paid": 3000, "promotional": 0, "total": 3000, "lots": 1},
        ],
    }
    text = cli("report", "expired", "--from", iso(start), "--to", iso(end))
    assert text.out.splitlines() == [
        f"expired from {iso(start)} to {iso(end)}",
        "USD paid          100 promotional           80 total          180  (2 lots)",
        "INR paid         3000 promotional            0 total         3000  (1 lots)",
    ]
    # Dates are midnight UTC; a period before the expirations holds none of them.
    day = start.date()
    earlier = cli(
        "report", "expired", "--from", str(day - timedelta(days=1)), "--to", iso(start), "--json"
    ).json()
    assert earlier["start"] == f"{day - timedelta(days=1)}T00:00:00Z"
    assert [c["total"] for c in earlier["currencies"]] == [0, 0]
    offset = cli(
        "report", "expired", "--from", "2026-01-01T05:30:00+05:30", "--to", "2099-01-01", "--json"
    ).json()
    assert offset["start"] == "2026-01-01T00:00:00Z"
    assert [c["total"] for c in offset["currencies"]] == [180, 3000]


BAD_INPUT = [
    (["wallet", "lots", "cus_missing"], "Customer cus_missing not found"),
    (["wallet", "lots", "{cid}", "--status", "live"], "status: must be one of active, expired"),
    (["wallet", "lots", "{cid}", "--currency", "XXX"], "currency: unsupported currency"),
    (["wallet", "lots", "{cid}", "--page-size", "500"], "page_size: must be an integer"),
    (["report", "expired", "--from", "2026-12-01"], "Missing option '--to'"),
    (["report", "expired", "--from", "yesterday", "--to", "2026-12-01"], "from: must be a date"),
    (["report", "expired", "--from", "2026-12-01", "--to", "2026-13-01"], "to: must be a date"),
    (
        ["report", "expired", "--from", "2026-12-01T00:00:00", "--to", "2026-12-02"],
        "from: must be a date or an RFC 3339 timestamp with an offset",
    ),
    (["report", "expired", "--from", "2026-12-02", "--to", "2026-12-01"], "to: must be after"),
    (["report", "expired", "--from", "2026-12-01", "--to", "2026-12-01"], "to: must be after"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUT, ids=lambda v: " ".join(v)[:50])
def test_bad_input_is_one_line_and_exit_2(cli, customer_id, args, message) -> None:
    result = cli(*(a.format(cid=customer_id) for a in args))
    assert (result.code, result.out) == (2, "")
    assert len(result.err.splitlines()) == 1
    assert result.err.startswith("billing-worker: ")
    assert message in result.err


def test_bad_input_through_the_real_entry_point(settings: Settings, customer_id) -> None:
    for args in (
        ["wallet", "lots", customer_id, "--status", "live"],
        ["report", "expired", "--from", "soon", "--to", "later"],
    ):
        done = run_cli_process(settings.database_url, *args)
        assert done.returncode == 2
        assert done.stdout == ""
        assert len(done.stderr.splitlines()) == 1, done.stderr
        assert done.stderr.startswith("billing-worker: ")
