"""``wallet lots``: a customer's credit lots, what is left of each and when it expires."""

from __future__ import annotations

import click

from worker.cli.common import emit, json_option, session
from worker.ledger import lot_views
from worker.ledger.lot_schemas import LotListOut, LotOut
from worker.ledger.schemas import iso
from worker.models import utcnow


@click.command("lots")
@click.argument("customer_id")
@click.option("--currency", help="Only lots in this currency, e.g. USD.")
@click.option("--status", help="Only lots that are active, expired or consumed.")
@click.option("--page-number", type=int, default=0, show_default=True)
@click.option("--page-size", type=int, default=10, show_default=True)
@json_option
def wallet_lots(
    customer_id: str,
    currency: str | None,
    status: str | None,
    page_number: int,
    page_size: int,
    as_json: bool,
) -> None:
    """CUSTOMER_ID's credit lots, newest first."""
    with session() as s:
        now = utcnow()
        lots = lot_views.list_lots(
            s,
            customer_id,
            currency=currency,
            status=status,
            page_number=page_number,
            page_size=page_size,
            now=now,
        )
        out = LotListOut(items=[LotOut.of(lot, now) for lot in lots])

    def text() -> str:
        return (
            "\n".join(
                f"{lot.lot_id} {lot.currency} {lot.status:<8} {lot.category:<11} "
                f"remaining {lot.remaining}/{lot.amount} expired {lot.expired} "
                f"expires {iso(lot.expires_at) if lot.expires_at else 'never'}"
                for lot in out.items
            )
            or "no lots"
        )

    emit(out, as_json, text)
