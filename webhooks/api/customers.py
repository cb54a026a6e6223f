"""Customers, wire-compatible with Dodo Payments: ``/customers`` and ``/customers/{id}``.

Views parse, open one transaction, call one ``worker.ledger`` function and shape the answer.
"""

from __future__ import annotations

from flask import Response, current_app, jsonify
from flask_openapi3 import APIBlueprint, Tag

from webhooks.api.schemas import CustomerCreate, CustomerListQuery, CustomerPatch, CustomerPath
from webhooks.auth import BEARER_SECURITY, actor
from webhooks.errors import BODY_RESPONSES, COMMON_RESPONSES
from webhooks.scopes import requires
from worker import ledger
from worker.access import audit
from worker.access.scopes import CUSTOMERS, READ
from worker.infra.db import transaction
from worker.ledger.schemas import CustomerListOut, CustomerOut, dump

# One blueprint for customers and their wallets (``wallets`` adds its routes to it): its name
# is part of every operationId in /openapi.json, which generated clients name methods after.
bp = APIBlueprint(
    "wallet_api",
    __name__,
    abp_tags=[Tag(name="Customers & wallets")],
    abp_security=BEARER_SECURITY,
    abp_responses=COMMON_RESPONSES,
)


def _tx():  # type: ignore[no-untyped-def]
    return transaction(current_app.config["SETTINGS"])


@bp.post("/customers", responses={200: CustomerOut, **BODY_RESPONSES})
@requires(CUSTOMERS)
def create_customer(body: CustomerCreate) -> Response:
    """Create a customer (and its wallets); an existing email returns that customer."""
    with _tx() as s:
        customer, _ = ledger.create_customer(
            s,
            email=body.email,
            name=body.name,
            phone_number=body.phone_number,
            metadata=body.metadata,
            actor=actor(),
        )
        return jsonify(dump(CustomerOut.of(customer)))


@bp.get("/customers", responses={200: CustomerListOut})
@requires(READ)
def list_customers(query: CustomerListQuery) -> Response:
    """List customers, newest first; filter by email, name or creation time."""
    with _tx() as s:
        customers = ledger.list_customers(
            s,
            email=query.email,
            name=query.name,
            created_at_gte=query.created_at_gte,
            created_at_lte=query.created_at_lte,
            page_number=query.page_number,
            page_size=query.page_size,
        )
        return jsonify(dump(CustomerListOut(items=[CustomerOut.of(c) for c in customers])))


@bp.get("/customers/<customer_id>", responses={200: CustomerOut})
@requires(READ)
def get_customer(path: CustomerPath) -> Response:
    """One customer."""
    with _tx() as s:
        return jsonify(dump(CustomerOut.of(ledger.get_customer(s, path.customer_id))))


@bp.patch("/customers/<customer_id>", responses={200: CustomerOut, **BODY_RESPONSES})
@requires(CUSTOMERS)
def patch_customer(path: CustomerPath, body: CustomerPatch) -> Response:
    """Change name, phone number, metadata or low-balance threshold overrides."""
    changes = body.model_dump(exclude_unset=True, exclude={"email"})
    if "metadata" in changes and changes["metadata"] is None:
        changes["metadata"] = {}
    with _tx() as s:
        if changes.get("low_balance_thresholds"):
            changes["low_balance_thresholds"] = {
                ledger.validate_currency(s, code, "low_balance_thresholds"): value
                for code, value in changes["low_balance_thresholds"].items()
            }
        customer = ledger.update_customer(s, path.customer_id, actor=actor(), **changes)
        # Which fields changed, not their values (metadata may hold personal data).
        audit.record(
            s, actor(), "customer.updated", customer.customer_id, {"fields": sorted(changes)}
        )
        return jsonify(dump(CustomerOut.of(customer)))
