"""``POST /customers/{id}/portal-sessions``: a signed link that shows one customer their own
wallet without an API key (``worker.access.portal``; the page is ``webhooks.dashboard``)."""

from __future__ import annotations

from datetime import datetime

from flask import Response, current_app, jsonify, request
from pydantic import Field

from webhooks.api.customers import bp
from webhooks.api.schemas import CustomerPath
from webhooks.auth import actor
from webhooks.scopes import requires
from worker import ledger
from worker.access import audit, portal
from worker.access.scopes import READ
from worker.infra.db import transaction
from worker.ledger.schemas import _Out, dump


class PortalSessionOut(_Out):
    url: str = Field(description="The customer's read-only page; open it without an API key.")
    expires_at: datetime = Field(description="After this the link answers 401.")


@bp.post("/customers/<customer_id>/portal-sessions", responses={200: PortalSessionOut})
@requires(READ)
def create_portal_session(path: CustomerPath) -> Response:
    """A link to the customer's balance portal, valid PORTAL_SESSION_SECONDS (default 3600):
    balances, credits and their expiry, recent spending per day, the last entries. Read-only,
    and for that one customer only. Needs only ``read``: it shows what a read key can read."""
    settings = current_app.config["SETTINGS"]
    link = portal.create_link(settings, path.customer_id)
    with transaction(settings) as s:
        ledger.get_customer(s, path.customer_id)  # 404 for an unknown customer
        # A link shows a customer's data to whoever holds it: who handed one out is recorded.
        audit.record(
            s,
            actor(),
            "portal.link_created",
            path.customer_id,
            {"expires_at": link.expires_at.isoformat(), "via": "http"},
        )
    out = PortalSessionOut(url=request.url_root.rstrip("/") + link.path, expires_at=link.expires_at)
    return jsonify(dump(out))
