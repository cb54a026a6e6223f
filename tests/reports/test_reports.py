"""The reports reconcile with the ledger by construction, on SQLite and PostgreSQL: random
ledgers (hypothesis) posted through the pipeline over a DST change, where every bucket,
statement and balance at a moment equals what summing the entries gives, and the export
parsed back with the ``csv`` module equals the statement's entries."""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from tests.support.ledger_clock import clock_at, post_at
from worker import ledger
from worker.config import Settings
from worker.infra.db import transaction
from worker.ledger.schemas import LedgerEntryOut, dump
from worker.models import LedgerEntry
from worker.reports import analytics, balances, export, periods, statements
from worker.reports.periods import _floor

# Two days before New York springs forward (2026-03-08) to a week after.
BASE = datetime(2026, 3, 6, 12, tzinfo=UTC)
SPAN_MINUTES = 10 * 24 * 60
REASONS = ["top-up", "api calls", None, 'comma, "quote"\nand a new line']

entries_strategy = st.lists(
    st.tuples(
        st.integers(0, SPAN_MINUTES),
        st.booleans(),
        st.integers(1, 5000),
        st.sampled_from(["merchant_adjustment", "payment", "usage"]),
        st.sampled_from(REASONS),
    ),
    min_size=0,
    max_size=14,
)
window = st.tuples(st.integers(-60, SPAN_MINUTES + 60), st.integers(0, SPAN_MINUTES + 60))


def new_customer(settings: Settings) -> str:
    with transaction(settings) as s:
        customer, _ = ledger.create_customer(s, email=f"{uuid.uuid4().hex}@r.io", name="R")
    return customer.customer_id


def post_ledger(settings: Settings, customer_id: str, spec: list[tuple]) -> list[dict[str, Any]]:
    """Post ``spec`` in time order (debits only what the wallet holds); the entries posted."""
    tx = lambda: transaction(settings)  # noqa: E731
    balance = 0
    posted = []
    for minutes, is_credit, amount, event_type, reason in sorted(spec, key=lambda x: x[0]):
        if not is_credit:
            amount = min(amount, balance)
            if amount == 0:
                continue
            event_type = "merchant_adjustment" if event_type == "payment" else event_type
        moment = BASE + timedelta(minutes=minutes)
        result = post_at(
            tx, moment, customer_id, amount, credit=is_credit, event_type=event_type, reason=reason
        )
        balance += amount if is_credit else -amount
        posted.append(
            {
                "at": moment,
                "credit": is_credit,
                "amount": amount,
                "event_type": event_type,
                "reason": reason,
                "id": result.entry.id,
            }
        )
    return posted


def signed(e: dict[str, Any]) -> int:
    return e["amount"] if e["credit"] else -e["amount"]


@hyp_settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    spec=entries_strategy,
    bounds=window,
    tz_name=st.sampled_from(["UTC", "America/New_York", "Asia/Kolkata"]),
    interval=st.sampled_from(["day", "week"]),
    group_by=st.sampled_from([None, "event_type", "reason"]),
)
def test_random_ledgers_reconcile_buckets_statements_balances_and_exports(
    settings: Settings, spec, bounds, tz_name, interval, group_by
) -> None:
    customer_id = new_customer(settings)
    posted = post_ledger(settings, customer_id, spec)
    lo, hi = sorted(bounds)
    start, end = BASE + timedelta(minutes=lo), BASE + timedelta(minutes=hi)
    p = periods.period(start, end, tz_name)
    inside = [e for e in posted if start <= e["at"] < end]
    tz = ZoneInfo(tz_name)

    # Every bucket is the sum of the entries whose local calendar period it is.
    expected: dict[tuple, list[int]] = {}
    for e in inside:
        key = (
            _floor(e["at"].astimezone(tz).replace(tzinfo=None), interval),
            e.get(group_by) if group_by else None,
        )
        sums = expected.setdefault(key, [0, 0, 0])
        sums[0 if e["credit"] else 1] += e["amount"]
        sums[2] += 1
    with transaction(settings) as s:
        report = analytics.analytics(s, customer_id, "USD", p, interval, group_by)
    got = {
        (_floor(line.bucket.start.astimezone(tz).replace(tzinfo=None), interval), line.group): [
            line.credits,
            line.debits,
            line.count,
        ]
        for line in report.lines
    }
    assert got == expected
    assert all(line.net == line.credits - line.debits for line in report.lines)

    # The statement: opening and closing from after_balance, the identity, the entries.
    with transaction(settings) as s:
        st_ = statements.statement(s, customer_id, "USD", p, limit=1000)
        st_entries = [dump(LedgerEntryOut.of(e)) for e in st_.entries]
    assert st_.opening == sum(signed(e) for e in posted if e["at"] < start)
    assert st_.closing == sum(signed(e) for e in posted if e["at"] < end)
    assert st_.totals.credits == sum(e["amount"] for e in inside if e["credit"])
    assert st_.totals.debits == sum(e["amount"] for e in inside if not e["credit"])
    assert st_.opening + st_.totals.credits - st_.totals.debits == st_.closing
    assert [e["id"] for e in st_entries] == [e["id"] for e in inside]

    # The balance at a moment is the sum of the entries at or before it.
    for moment in (start, end, BASE + timedelta(minutes=hi // 2)):
        with transaction(settings) as s:
            point = balances.balance_at(s, customer_id, "USD", moment)
        assert point.balance == sum(signed(e) for e in posted if e["at"] <= moment)

    # The export, parsed back with the csv module, is the statement's entries.
    with transaction(settings) as s:
        parts = export.spans(s, customer_id, "USD", start, end)
        text = "".join(export.chunks(s, customer_id, parts, "csv"))
    assert parse_csv(text) == st_entries


def parse_csv(text: str) -> list[dict[str, Any]]:
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    out = []
    for row in rows:
        record: dict[str, Any] = {k: (v if v != "" else None) for k, v in row.items()}
        for k in ("amount", "after_balance", "before_balance"):
            record[k] = int(record[k])
        record["is_credit"] = record["is_credit"] == "true"
        out.append(record)
    return out


def test_an_export_has_a_header_row_even_when_empty(settings: Settings) -> None:
    customer_id = new_customer(settings)
    with transaction(settings) as s:
        parts = export.spans(s, customer_id, None, None, None)
        text = "".join(export.chunks(s, customer_id, parts, "csv"))
        ndjson = "".join(export.chunks(s, customer_id, parts, "ndjson"))
    assert text == ",".join(export.COLUMNS) + "\r\n"
    assert ndjson == ""


def test_an_export_of_every_wallet_is_in_ledger_order_in_ndjson(settings: Settings) -> None:
    customer_id = new_customer(settings)
    tx = lambda: transaction(settings)  # noqa: E731
    ids = [
        post_at(tx, BASE, customer_id, 100, credit=True).entry.id,
        post_at(tx, BASE, customer_id, 900, credit=True, currency="INR").entry.id,
        post_at(tx, BASE + timedelta(hours=1), customer_id, 40, credit=False).entry.id,
    ]
    with transaction(settings) as s:
        parts = export.spans(s, customer_id, None, None, None)
        lines = "".join(export.chunks(s, customer_id, parts, "ndjson")).splitlines()
        api = [
            dump(LedgerEntryOut.of(s.get(LedgerEntry, seq)))
            for seq in s.scalars(
                LedgerEntry.__table__.select()
                .with_only_columns(LedgerEntry.seq)
                .where(LedgerEntry.customer_id == customer_id)
                .order_by(LedgerEntry.seq)
            )
        ]
    assert [json.loads(line) for line in lines] == api
    assert [r["id"] for r in api] == ids


def test_dst_day_buckets_in_new_york_split_at_local_midnight(settings: Settings) -> None:
    customer_id = new_customer(settings)
    tx = lambda: transaction(settings)  # noqa: E731
    # 23:30 on 2026-03-07 in New York (EST) is 04:30 UTC on the 8th; 23:30 on the 8th (EDT)
    # is 03:30 UTC on the 9th: by UTC day both would be a day later.
    post_at(tx, datetime(2026, 3, 8, 4, 30, tzinfo=UTC), customer_id, 1000, credit=True)
    post_at(tx, datetime(2026, 3, 9, 3, 30, tzinfo=UTC), customer_id, 300, credit=False)
    p = periods.period(date(2026, 3, 7), date(2026, 3, 10), "America/New_York")
    with transaction(settings) as s:
        report = analytics.analytics(s, customer_id, "USD", p, "day")
    tz = ZoneInfo("America/New_York")
    assert [
        (
            periods.local_iso(line.bucket.start, tz),
            periods.local_iso(line.bucket.end, tz),
            line.credits,
            line.debits,
            line.count,
        )
        for line in report.lines
    ] == [
        ("2026-03-07T00:00:00-05:00", "2026-03-08T00:00:00-05:00", 1000, 0, 1),
        ("2026-03-08T00:00:00-05:00", "2026-03-09T00:00:00-04:00", 0, 300, 1),
    ]
    p_utc = periods.period(date(2026, 3, 7), date(2026, 3, 10))
    with transaction(settings) as s:
        utc = analytics.analytics(s, customer_id, "USD", p_utc, "day")
    assert [line.bucket.start.date() for line in utc.lines] == [date(2026, 3, 8), date(2026, 3, 9)]


def test_an_empty_range_has_no_buckets_and_a_flat_statement(settings: Settings) -> None:
    customer_id = new_customer(settings)
    post_at(lambda: transaction(settings), BASE, customer_id, 700, credit=True)
    moment = BASE + timedelta(days=1)
    p = periods.period(moment, moment)
    with transaction(settings) as s:
        assert analytics.analytics(s, customer_id, "USD", p, "day").lines == []
        st_ = statements.statement(s, customer_id, "USD", p)
    assert (st_.opening, st_.closing, st_.totals, st_.entries) == (
        700,
        700,
        statements.Totals(),
        [],
    )
    quiet = periods.period(BASE + timedelta(days=2), BASE + timedelta(days=3))
    with transaction(settings) as s:
        assert analytics.analytics(s, customer_id, "USD", quiet, "day", "reason").lines == []


def test_entries_created_out_of_order_keep_the_statement_exact(settings: Settings) -> None:
    """A posting that waited for the wallet's lock carries a created_at earlier than the entry
    before it in the chain; the statement follows the chain, so the identity still holds."""
    customer_id = new_customer(settings)
    tx = lambda: transaction(settings)  # noqa: E731
    t = BASE
    post_at(tx, t, customer_id, 1000, credit=True)
    post_at(tx, t + timedelta(seconds=2), customer_id, 100, credit=False)
    late = post_at(tx, t + timedelta(seconds=1), customer_id, 50, credit=True)  # waited
    p = periods.period(t + timedelta(milliseconds=1500), t + timedelta(seconds=3))
    with transaction(settings) as s:
        st_ = statements.statement(s, customer_id, "USD", p)
        at = balances.balance_at(s, customer_id, "USD", t + timedelta(milliseconds=1500))
    # The chain's point before `from` is after the late credit (the last entry created
    # before it); the period holds nothing after that point created before `to`.
    assert (st_.opening, st_.closing) == (950, 950)
    assert st_.opening + st_.totals.credits - st_.totals.debits == st_.closing
    assert at.entry_id == late.entry.id and at.balance == 950


def test_a_statement_pages_its_entries_by_cursor(settings: Settings) -> None:
    customer_id = new_customer(settings)
    tx = lambda: transaction(settings)  # noqa: E731
    ids = [
        post_at(tx, BASE + timedelta(minutes=i), customer_id, 10 + i, credit=True).entry.id
        for i in range(5)
    ]
    p = periods.period(BASE, BASE + timedelta(hours=1))
    seen, cursor = [], None
    while True:
        with clock_at(BASE), transaction(settings) as s:
            page = statements.statement(s, customer_id, "USD", p, cursor=cursor, limit=2)
        assert page.totals.count == 5 and page.closing == sum(10 + i for i in range(5))
        seen += [e.id for e in page.entries]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == ids


def test_a_moment_further_back_than_the_recent_walk_is_still_exact(
    settings: Settings, monkeypatch
) -> None:
    """With the walk back the chain cut to 2 entries, older moments are answered by the
    created_at index (PostgreSQL), and still equal the sum of the entries up to them."""
    monkeypatch.setattr(balances, "RECENT", 2)
    customer_id = new_customer(settings)
    tx = lambda: transaction(settings)  # noqa: E731
    amounts = [500, -120, 300, -80, -100, 40]
    for i, amount in enumerate(amounts):
        post_at(tx, BASE + timedelta(hours=i), customer_id, abs(amount), credit=amount > 0)
    for i in range(-1, len(amounts) + 1):
        moment = BASE + timedelta(hours=i, minutes=30)
        with transaction(settings) as s:
            point = balances.balance_at(s, customer_id, "USD", moment)
        assert point.balance == sum(amounts[: max(0, i + 1)]), i
