"""``billing-worker report summary`` and ``billing-worker ledger export``."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

from tests.support.ledger_clock import post_at
from worker import ledger
from worker.config import Settings
from worker.infra.db import transaction

BASE = datetime(2026, 6, 1, 12, tzinfo=UTC)


def customer_with_entries(settings: Settings) -> str:
    with transaction(settings) as s:
        customer, _ = ledger.create_customer(s, email="cli-rep@example.com", name="C")
    cid = customer.customer_id
    tx = lambda: transaction(settings)  # noqa: E731
    post_at(tx, BASE, cid, 5000, credit=True, event_type="payment")
    post_at(tx, BASE + timedelta(days=1), cid, 120, credit=False, reason="api, v2")
    return cid


def test_report_summary_in_text_and_json(cli, settings: Settings) -> None:
    customer_with_entries(settings)
    result = cli("report", "summary", "--from", "2026-06-01", "--to", "2026-07-01", "--json")
    assert result.code == 0, result.err
    usd = result.json()["currencies"][0]
    assert (usd["credited"], usd["debited"], usd["liability"]) == (
        {"payment": 5000},
        {"merchant_adjustment": 120},
        4880,
    )
    assert result.json()["from"] == "2026-06-01T00:00:00Z"
    text = cli(
        "report", "summary", "--from", "2026-06-01", "--to", "2026-07-01", "--tz", "Asia/Tokyo"
    )
    assert text.code == 0
    assert "summary from 2026-05-31T15:00:00Z to 2026-06-30T15:00:00Z" in text.out
    assert "USD: liability 4880 (held 0); credited 5000, debited 120 (2 entries)" in text.out


def test_report_summary_refuses_a_bad_range_on_one_line(cli) -> None:
    result = cli("report", "summary", "--from", "2026-07-01", "--to", "2026-06-01")
    assert (result.code, result.out) == (2, "")
    assert result.err == "billing-worker: from: must not be after to\n"
    bad_tz = cli("report", "summary", "--from", "2026-06-01", "--to", "2026-07-01", "--tz", "X/Y")
    assert bad_tz.code == 2 and bad_tz.err.startswith("billing-worker: tz: unknown time zone")


def test_ledger_export_writes_csv_to_stdout(cli, settings: Settings) -> None:
    cid = customer_with_entries(settings)
    result = cli("ledger", "export", cid)
    assert result.code == 0, result.err
    rows = list(csv.DictReader(io.StringIO(result.out, newline="")))
    assert [(r["amount"], r["is_credit"], r["reason"]) for r in rows] == [
        ("5000", "true", ""),
        ("120", "false", "api, v2"),
    ]
    ndjson = cli("ledger", "export", cid, "--from", "2026-06-02", "--format", "ndjson")
    assert [json.loads(line)["amount"] for line in ndjson.out.splitlines()] == [120]
    missing = cli("ledger", "export", "cus_missing")
    assert missing.code == 2 and "cus_missing" in missing.err and missing.out == ""
