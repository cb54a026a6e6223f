"""The customer-wallet API, wire-compatible with Dodo Payments' endpoints.

Views parse, open one transaction, call one ``worker.ledger`` function and shape the answer.
"""

from __future__ import annotations

from flask import Response, current_app, jsonify
from flask_openapi3 import APIBlueprint, Tag

from webhooks.auth import BEARER_SECURITY
from webhooks.errors import BODY_RESPONSES, COMMON_RESPONSES, DuplicateOut, error_response
from webhooks.schemas import (
    CustomerCreate,
    CustomerListQuery,
    CustomerPatch,
    CustomerPath,
    LedgerEntryCreate,
    LedgerEntryListQuery,
)
from worker import ledger
from worker.errors import DuplicateEntry
from worker.infra.db import transaction
from worker.models import Wallet
from worker.schemas import (
    CustomerListOut,
    CustomerOut,
    LedgerEntryListOut,
    LedgerEntryOut,
    WalletListOut,
    WalletOut,
    dump,
)

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
def create_customer(body: CustomerCreate) -> Response:
    """Create a customer (and its wallets); an existing email returns that customer."""
    with _tx() as s:
        customer, _ = ledger.create_customer(
            s,
            email=body.email,
            name=body.name,
            phone_number=body.phone_number,
            metadata=body.metadata,
        )
        return jsonify(dump(CustomerOut.of(customer)))


@bp.get("/customers", responses={200: CustomerListOut})
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
def get_customer(path: CustomerPath) -> Response:
    """One customer."""
    with _tx() as s:
        return jsonify(dump(CustomerOut.of(ledger.get_customer(s, path.customer_id))))


@bp.patch("/customers/<customer_id>", responses={200: CustomerOut, **BODY_RESPONSES})
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
        customer = ledger.update_customer(s, path.customer_id, **changes)
        return jsonify(dump(CustomerOut.of(customer)))


@bp.get("/customers/<customer_id>/wallets", responses={200: WalletListOut})
def list_wallets(path: CustomerPath) -> Response:
    """Every wallet of the customer, and their total in USD cents."""
    with _tx() as s:
        wallets = ledger.get_wallets(s, path.customer_id)
        return jsonify(
            dump(
                WalletListOut(
                    items=[WalletOut.of(w) for w in wallets],
                    total_balance_usd=ledger.total_balance_usd(s, wallets),
                )
            )
        )


@bp.post(
    "/customers/<customer_id>/wallets/ledger-entries",
    responses={200: WalletOut, 409: DuplicateOut, **BODY_RESPONSES},
)
def create_ledger_entry(path: CustomerPath, body: LedgerEntryCreate) -> Response:
    """Credit or debit a wallet; answers with the updated wallet.

    400 ``INSUFFICIENT_BALANCE`` refuses a debit beyond the balance; 409
    ``DUPLICATE_IDEMPOTENCY_KEY`` (with ``x-should-retry: false``) means the key was already
    used with these parameters and nothing changed.
    """
    leg = ledger.Leg(
        customer_id=path.customer_id,
        currency=body.currency,
        amount=body.amount,
        is_credit=body.entry_type == "credit",
        reason=body.reason,
        key=ledger.client_key(body.idempotency_key),
    )
    try:
        posted = ledger.post_own(current_app.config["SETTINGS"], leg)
    except DuplicateEntry as duplicate:
        return duplicate_response(duplicate, duplicate.wallet)
    return jsonify(dump(WalletOut.of(posted.wallet)))


def duplicate_response(duplicate: DuplicateEntry, wallet: Wallet) -> Response:
    """409 carrying the original entry and the wallet as it stands now."""
    response = error_response(
        409,
        duplicate.code,
        duplicate.message,
        **duplicate.details,
        entry=dump(LedgerEntryOut.of(duplicate.entry)),
        wallet=dump(WalletOut.of(wallet)),
    )
    # Stainless-generated SDKs (Dodo's) retry every 409 unless told not to.
    response.headers["x-should-retry"] = "false"
    return response


@bp.get("/customers/<customer_id>/wallets/ledger-entries", responses={200: LedgerEntryListOut})
def list_ledger_entries(path: CustomerPath, query: LedgerEntryListQuery) -> Response:
    """The customer's ledger entries, newest first."""
    with _tx() as s:
        entries = ledger.list_entries(
            s,
            path.customer_id,
            currency=query.currency,
            page_number=query.page_number,
            page_size=query.page_size,
        )
        return jsonify(dump(LedgerEntryListOut(items=[LedgerEntryOut.of(e) for e in entries])))
