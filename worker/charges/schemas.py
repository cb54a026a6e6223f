"""JSON shapes of wallet charges, reversals and refunds, shared by the HTTP API and the CLI."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from worker.charges.views import ChargeView, Refund, Reversal
from worker.ledger.schemas import LedgerEntryOut, WalletOut, _Out


class ChargeOut(_Out):
    charge_id: str
    customer_id: str
    order_id: str
    currency: str
    idempotency_key: str
    allow_partial: bool
    requested_amount: int = Field(description="The order amount asked of the wallet.")
    applied_amount: int = Field(description="Taken from the wallet (minor units).")
    remaining_amount: int = Field(
        description="requested_amount - applied_amount: charge the card for this."
    )
    reversed_amount: int = Field(description="Given back to the wallet so far.")
    reversible_amount: int = Field(description="applied_amount - reversed_amount.")
    reason: str | None = None
    created_at: datetime
    wallet: WalletOut = Field(description="The wallet as it stands now.")
    entries: list[LedgerEntryOut] = Field(
        description="The ledger entries behind the charge: its debit, then any reversals."
    )

    @classmethod
    def of(cls, view: ChargeView) -> ChargeOut:
        return cls(**_charge_fields(view))


def _charge_fields(view: ChargeView) -> dict[str, object]:
    c = view.charge
    return {
        "charge_id": c.charge_id,
        "customer_id": c.customer_id,
        "order_id": c.order_id,
        "currency": c.currency,
        "idempotency_key": c.idempotency_key,
        "allow_partial": c.allow_partial,
        "requested_amount": c.requested_amount,
        "applied_amount": c.applied_amount,
        "remaining_amount": view.remaining_amount,
        "reversed_amount": c.reversed_amount,
        "reversible_amount": view.reversible_amount,
        "reason": c.reason,
        "created_at": c.created_at,
        "wallet": WalletOut.of(view.wallet),
        "entries": [LedgerEntryOut.of(e) for e in view.entries],
    }


class ReversalOut(ChargeOut):
    reversed_now: int = Field(
        description="Credited back by this request (0 when nothing was left or on a replay)."
    )
    reversal_entry: LedgerEntryOut | None = Field(
        None, description="The payment_reversal entry this request wrote, if any."
    )

    @classmethod
    def of_reversal(cls, reversal: Reversal) -> ReversalOut:
        entry = reversal.entry
        return cls(
            **_charge_fields(reversal.view),
            reversed_now=entry.amount if entry else 0,
            reversal_entry=LedgerEntryOut.of(entry) if entry else None,
        )


class RefundOut(_Out):
    refund_id: str | None = None
    payment_id: str
    amount: int
    currency: str
    entry: LedgerEntryOut = Field(description="The refund credit (event_type refund).")
    wallet: WalletOut

    @classmethod
    def of(cls, refund: Refund) -> RefundOut:
        e = refund.entry
        return cls(
            refund_id=refund.refund_id,
            payment_id=e.reference_object_id or "",
            amount=e.amount,
            currency=e.currency,
            entry=LedgerEntryOut.of(e),
            wallet=WalletOut.of(refund.wallet),
        )
