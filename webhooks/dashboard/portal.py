"""The customer portal: the page a signed link (``POST /customers/{id}/portal-sessions``)
opens, for that customer only, read-only, without an API key.

The customer comes from the verified link and from nowhere else: the page takes no query
parameters, and a link edited to another customer's id fails its signature (401, a plain
page). It shows balances with what is available (active holds aside), credit lots and their
expiry, spending per day over 30 days and the last entries.
"""

from __future__ import annotations

from flask import current_app, render_template

from webhooks.dashboard import charts, portal_bp
from worker import ledger
from worker.access import portal
from worker.infra.db import transaction
from worker.ledger import dashboard_views as views
from worker.ledger.lot_schemas import wallet_list
from worker.ledger.lot_views import lot_status
from worker.models import utcnow

RECENT_ENTRIES = 20


@portal_bp.get("/<customer_id>/<token>")
def customer_portal(customer_id: str, token: str) -> tuple[str, int]:
    settings = current_app.config["SETTINGS"]
    now = utcnow()
    link = portal.verify(settings, customer_id, token, now=now)
    with transaction(settings) as s:
        customer = ledger.get_customer(s, link.customer_id)
        wallets = wallet_list(s, link.customer_id)
        lots = views.live_lots(s, link.customer_id)
        spending = views.daily_spending(s, link.customer_id, days=30, now=now)
        entries = views.ledger_page(s, link.customer_id, page_size=RECENT_ENTRIES).entries
    spending_charts = [
        (
            w.currency,
            charts.daily_bars(
                spending, w.currency, f"spend-{w.currency}", today=now.date(), show_credits=False
            ),
        )
        for w in wallets.items
    ]
    html = render_template(
        "dashboard/portal.html",
        customer=customer,
        wallets=wallets,
        lots=[(lot, lot_status(lot, now)) for lot in lots],
        spending_charts=spending_charts,
        entries=entries,
        expires_at=link.expires_at,
    )
    return html, 200
