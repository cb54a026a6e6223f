"""The JSON shapes of reports, shared by the HTTP API and the CLI. Amounts are integers in
minor units; exact usage costs and fractions are decimal strings, as ``pending_usage`` is."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ConfigDict, Field

from worker.ledger.schemas import LedgerEntryOut, _Out
from worker.reports.analytics import Report
from worker.reports.balances import ChainPoint
from worker.reports.export import STATEMENT_COLUMNS, csv_chunks, ndjson_chunks
from worker.reports.periods import local_iso
from worker.reports.statements import Statement
from worker.reports.summary import CurrencySummary
from worker.usage.schemas import scaled_to_str


class BucketOut(_Out):
    start: str = Field(description="The bucket's start, in the report's time zone (RFC 3339).")
    end: str = Field(description="The bucket's end (exclusive).")
    group: str | None = Field(
        description="The event type, reason or meter (event name); null without group_by."
    )
    credits: int = Field(description="Minor units credited.")
    debits: int = Field(
        description="Minor units debited; for group_by=meter, the whole minor units of `cost`."
    )
    net: int = Field(description="credits - debits.")
    count: int = Field(description="Entries (usage events for group_by=meter).")
    cost: str | None = Field(
        None,
        description="group_by=meter: the events' exact cost, a decimal string in minor units "
        "(`debits` plus the fraction below one minor unit).",
    )


ANALYTICS_EXAMPLE = {
    "customer_id": "cus_V1StGXR8Z5jdHi6B0myT",
    "currency": "USD",
    "interval": "day",
    "group_by": "event_type",
    "tz": "America/New_York",
    "from": "2026-03-07T00:00:00-05:00",
    "to": "2026-03-10T00:00:00-04:00",
    "buckets": [
        {
            "start": "2026-03-07T00:00:00-05:00",
            "end": "2026-03-08T00:00:00-05:00",
            "group": "payment",
            "credits": 10000,
            "debits": 0,
            "net": 10000,
            "count": 1,
            "cost": None,
        },
        {
            "start": "2026-03-08T00:00:00-05:00",
            "end": "2026-03-09T00:00:00-04:00",
            "group": "usage",
            "credits": 0,
            "debits": 1234,
            "net": -1234,
            "count": 3,
            "cost": None,
        },
    ],
    "pending_usage": None,
}


class AnalyticsOut(_Out):
    """Credits and debits per calendar bucket; only buckets and groups with entries."""

    model_config = ConfigDict(
        serialize_by_alias=True, json_schema_extra={"examples": [ANALYTICS_EXAMPLE]}
    )

    customer_id: str
    currency: str
    interval: str
    group_by: str | None
    tz: str
    from_: str = Field(alias="from", serialization_alias="from")
    to: str
    buckets: list[BucketOut]
    pending_usage: str | None = Field(
        None,
        description="group_by=meter: the wallet's usage cost accrued but not yet debited now "
        "(below one minor unit), as on the wallet.",
    )

    @classmethod
    def of(cls, customer_id: str, r: Report) -> AnalyticsOut:
        tz = r.period.tz
        return cls.model_validate(
            {
                "customer_id": customer_id,
                "currency": r.currency,
                "interval": r.interval,
                "group_by": r.group_by,
                "tz": tz.key,
                "from": local_iso(r.period.start, tz),
                "to": local_iso(r.period.end, tz),
                "buckets": [
                    BucketOut(
                        start=local_iso(line.bucket.start, tz),
                        end=local_iso(line.bucket.end, tz),
                        group=line.group,
                        credits=line.credits,
                        debits=line.debits,
                        net=line.net,
                        count=line.count,
                        cost=None if line.cost_scaled is None else scaled_to_str(line.cost_scaled),
                    )
                    for line in r.lines
                ],
                "pending_usage": None
                if r.pending_usage_scaled is None
                else scaled_to_str(r.pending_usage_scaled),
            }
        )


class BalanceAtOut(_Out):
    """A wallet's balance at a moment, from the last entry at or before it."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "customer_id": "cus_V1StGXR8Z5jdHi6B0myT",
                    "currency": "USD",
                    "at": "2026-03-01T00:00:00Z",
                    "balance": 8766,
                    "entry_id": "wle_Ij4kC2mXq9RvT0aZ1bN3",
                    "entry_created_at": "2026-02-28T17:04:11.532000Z",
                }
            ]
        }
    )

    customer_id: str
    currency: str
    at: datetime
    balance: int = Field(description="Minor units, right after `entry_id` (0 before any entry).")
    entry_id: str | None = Field(description="The last entry at or before `at`; null if none.")
    entry_created_at: datetime | None = None

    @classmethod
    def of(cls, customer_id: str, currency: str, at: datetime, p: ChainPoint) -> BalanceAtOut:
        return cls(
            customer_id=customer_id,
            currency=currency,
            at=at,
            balance=p.balance,
            entry_id=p.entry_id,
            entry_created_at=p.created_at,
        )


class StatementOut(_Out):
    """opening_balance + total_credits - total_debits = closing_balance, always."""

    model_config = ConfigDict(
        serialize_by_alias=True,
        json_schema_extra={
            "examples": [
                {
                    "customer_id": "cus_V1StGXR8Z5jdHi6B0myT",
                    "currency": "USD",
                    "from": "2026-03-01T00:00:00Z",
                    "to": "2026-04-01T00:00:00Z",
                    "opening_balance": 8766,
                    "closing_balance": 17266,
                    "total_credits": 10000,
                    "total_debits": 1500,
                    "expired": 500,
                    "entry_count": 3,
                    "entries": [
                        {
                            "id": "wle_...",
                            "amount": 10000,
                            "after_balance": 18766,
                            "before_balance": 8766,
                            "business_id": "bus_local",
                            "created_at": "2026-03-02T09:00:00Z",
                            "currency": "USD",
                            "customer_id": "cus_V1StGXR8Z5jdHi6B0myT",
                            "event_type": "payment",
                            "is_credit": True,
                            "reason": "Top-up",
                            "reference_object_id": "pay_1",
                            "idempotency_key": None,
                            "actor": "webhook:dodo",
                        }
                    ],
                    "next_cursor": "1042",
                }
            ]
        },
    )

    customer_id: str
    currency: str
    from_: datetime = Field(alias="from", serialization_alias="from")
    to: datetime
    opening_balance: int = Field(description="The balance just before `from`.")
    closing_balance: int = Field(description="The balance just before `to`.")
    total_credits: int
    total_debits: int
    expired: int = Field(description="The part of total_debits taken by expired credit.")
    entry_count: int = Field(description="Entries in the period (all pages).")
    entries: list[LedgerEntryOut] = Field(
        description="This page of the period's entries, oldest first (the ledger's order)."
    )
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page of entries; null on the last page."
    )

    @classmethod
    def of(cls, st: Statement) -> StatementOut:
        return cls.model_validate(
            {
                "customer_id": st.customer_id,
                "currency": st.span.currency,
                "from": st.period.start,
                "to": st.period.end,
                "opening_balance": st.opening,
                "closing_balance": st.closing,
                "total_credits": st.totals.credits,
                "total_debits": st.totals.debits,
                "expired": st.totals.expired,
                "entry_count": st.totals.count,
                "entries": [LedgerEntryOut.of(e) for e in st.entries],
                "next_cursor": st.next_cursor,
            }
        )


class ExpiredSplitOut(_Out):
    paid: int
    promotional: int


class CurrencySummaryOut(_Out):
    currency: str
    credited: dict[str, int] = Field(description="Minor units credited, by event type.")
    debited: dict[str, int] = Field(description="Minor units debited, by event type.")
    total_credited: int
    total_debited: int
    entries: int = Field(description="Ledger entries in the period.")
    expired: ExpiredSplitOut = Field(
        description="Credit that expired in the period, paid and promotional apart (part of "
        "`debited.expiration`)."
    )
    liability: int = Field(description="Outstanding liability: every wallet's balance at `to`.")
    held: int = Field(
        description="Minor units active holds (open disputes' included) reserved at `to`: holds "
        "created before `to` and not yet captured, released or expired then. Part of "
        "`liability` (a hold debits nothing); for a `to` now or later, what is held now."
    )
    unbilled_usage: int = Field(
        description="Whole minor units usage events owe now (unbilled, awaiting settlement)."
    )
    pending_usage: str = Field(
        description="Usage cost accrued below one minor unit in wallets now, a decimal string."
    )

    @classmethod
    def of(cls, c: CurrencySummary) -> CurrencySummaryOut:
        expired = c.expired
        return cls(
            currency=c.currency,
            credited=dict(sorted(c.credited.items())),
            debited=dict(sorted(c.debited.items())),
            total_credited=c.total_credited,
            total_debited=c.total_debited,
            entries=c.entries,
            expired=ExpiredSplitOut(
                paid=expired.paid if expired else 0,
                promotional=expired.promotional if expired else 0,
            ),
            liability=c.liability,
            held=c.held,
            unbilled_usage=c.unbilled_usage,
            pending_usage=scaled_to_str(c.pending_usage_scaled),
        )


SUMMARY_EXAMPLE: dict[str, Any] = {
    "from": "2026-03-01T00:00:00Z",
    "to": "2026-04-01T00:00:00Z",
    "currencies": [
        {
            "currency": "USD",
            "credited": {"merchant_adjustment": 5000, "payment": 250000},
            "debited": {"expiration": 1200, "refund": 10000, "usage": 98000},
            "total_credited": 255000,
            "total_debited": 109200,
            "entries": 4120,
            "expired": {"paid": 200, "promotional": 1000},
            "liability": 545800,
            "held": 2500,
            "unbilled_usage": 340,
            "pending_usage": "12.004",
        }
    ],
}


class SummaryOut(_Out):
    """Business-wide figures per currency. Summaries of adjacent periods reconcile: the
    liability at one's ``to`` plus the next one's credited minus its debited is the next
    one's liability (credits and debits are dated by ``created_at``, balances by the ledger's
    chain; they could only differ by an entry posted within milliseconds of a boundary while
    another waited for its wallet)."""

    model_config = ConfigDict(
        serialize_by_alias=True, json_schema_extra={"examples": [SUMMARY_EXAMPLE]}
    )

    from_: datetime = Field(alias="from", serialization_alias="from")
    to: datetime
    currencies: list[CurrencySummaryOut]

    @classmethod
    def of(cls, p_start: datetime, p_end: datetime, lines: list[CurrencySummary]) -> SummaryOut:
        return cls.model_validate(
            {"from": p_start, "to": p_end, "currencies": [CurrencySummaryOut.of(c) for c in lines]}
        )


BALANCE_EXAMPLE: dict[str, Any] = BalanceAtOut.model_config["json_schema_extra"]["examples"][0]  # type: ignore[index]
STATEMENT_EXAMPLE: dict[str, Any] = StatementOut.model_config["json_schema_extra"]["examples"][0]  # type: ignore[index]
# The streamed formats' examples, written by the code that writes the files.
_RECORD = {**STATEMENT_EXAMPLE["entries"][0], "id": "wle_Ij4kC2mXq9RvT0aZ1bN3"}
CSV_EXAMPLE = "".join(csv_chunks([_RECORD]))
NDJSON_EXAMPLE = "".join(ndjson_chunks([_RECORD]))
_EDGE = {"currency": "USD", "customer_id": _RECORD["customer_id"]}
STATEMENT_CSV_EXAMPLE = "".join(
    csv_chunks(
        [
            {
                "kind": "opening",
                "created_at": "2026-03-01T00:00:00Z",
                "after_balance": 8766,
                **_EDGE,
            },
            {"kind": "entry", **_RECORD},
            {
                "kind": "closing",
                "created_at": "2026-04-01T00:00:00Z",
                "after_balance": 18766,
                **_EDGE,
            },
        ],
        STATEMENT_COLUMNS,
    )
)
