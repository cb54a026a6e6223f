"""The JSON shapes of credit lots, an entry with its lots, the wallet list with its expiry
summary and the breakage report, shared by the HTTP API and the CLI."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, cast

from pydantic import Field
from sqlalchemy.orm import Session

from worker.ledger.breakage import ExpiredTotals
from worker.ledger.lot_views import (
    EntryDetail,
    ExpirySummary,
    LotStatus,
    expiry_summaries,
    lot_status,
)
from worker.ledger.schemas import LedgerEntryOut, WalletListOut, WalletSummaryOut, _Out
from worker.ledger.wallets import get_wallets, total_balance_usd
from worker.models import CreditLot


class LotOut(_Out):
    lot_id: str
    currency: str
    amount: int = Field(description="Minor units the credit brought.")
    remaining: int = Field(
        description="Minor units left (spendable while the lot is active; an expired lot "
        "keeps its remainder until its expiration entry takes it)."
    )
    expired: int = Field(description="Minor units taken by the lot's expiration entry.")
    category: Literal["paid", "promotional"]
    expires_at: datetime | None = Field(description="When the lot expires; null: never.")
    created_at: datetime
    status: LotStatus = Field(
        description="`active` (holds spendable credit), `expired` (past `expires_at`) or "
        "`consumed` (spent before it expired)."
    )
    entry_id: str | None = Field(
        description="The credit entry that created the lot; null for a wallet's opening lot "
        "(its balance when lots were introduced)."
    )

    @classmethod
    def of(cls, lot: CreditLot, now: datetime) -> LotOut:
        return cls(
            lot_id=lot.id,
            currency=lot.currency,
            amount=lot.amount,
            remaining=lot.remaining,
            expired=lot.expired,
            category=cast(Any, lot.category),  # a column checked against LOT_CATEGORIES
            expires_at=lot.expires_at,
            created_at=lot.created_at,
            status=lot_status(lot, now),
            entry_id=lot.entry_id,
        )


class LotListOut(_Out):
    items: list[LotOut]


class ConsumedLotOut(_Out):
    lot_id: str
    amount: int = Field(description="Minor units the debit took from this lot.")


class LedgerEntryDetailOut(LedgerEntryOut):
    """An entry as the list shows it, with the lots behind it."""

    consumed_lots: list[ConsumedLotOut] | None = Field(
        None,
        description="Debits: what the debit took from which lots, in spending order (the "
        "amounts sum to the entry's amount). Null for credits and for debits posted before "
        "lots existed.",
    )
    lot: LotOut | None = Field(
        None,
        description="Credits: the lot the credit created. Null for debits and for credits "
        "posted before lots existed.",
    )

    @classmethod
    def of_detail(cls, detail: EntryDetail, now: datetime) -> LedgerEntryDetailOut:
        consumed = detail.consumed
        return cls(
            **LedgerEntryOut.of(detail.entry).model_dump(),
            consumed_lots=None
            if consumed is None
            else [ConsumedLotOut(lot_id=lot_id, amount=amount) for lot_id, amount in consumed],
            lot=None if detail.lot is None else LotOut.of(detail.lot, now),
        )


def wallet_list(session: Session, customer_id: str) -> WalletListOut:
    """``GET /customers/{id}/wallets`` (and ``wallet show``): every wallet with its expiry
    summary, and their total in USD cents."""
    wallets = get_wallets(session, customer_id)
    summaries = expiry_summaries(session, customer_id)
    none = ExpirySummary()
    items = []
    for w in wallets:
        summary = summaries.get(w.currency, none)
        items.append(WalletSummaryOut.with_expiry(w, summary.expiring_soon, summary.next_expiry_at))
    return WalletListOut(items=items, total_balance_usd=total_balance_usd(session, wallets))


class ExpiredLineOut(_Out):
    currency: str
    paid: int = Field(description="Minor units of paid credit that expired.")
    promotional: int = Field(description="Minor units of promotional credit that expired.")
    total: int
    lots: int = Field(description="How many lots expired.")

    @classmethod
    def of(cls, line: ExpiredTotals) -> ExpiredLineOut:
        return cls(
            currency=line.currency,
            paid=line.paid,
            promotional=line.promotional,
            total=line.total,
            lots=line.lots,
        )


class ExpiredReportOut(_Out):
    """Credit expired in ``[start, end)``, dated by the expiration entries."""

    start: datetime = Field(description="The period's start (inclusive; `--from`).")
    end: datetime = Field(description="The period's end (exclusive; `--to`).")
    currencies: list[ExpiredLineOut]
