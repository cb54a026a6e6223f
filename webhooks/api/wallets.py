"""Wallets and their ledger entries, wire-compatible with Dodo Payments' endpoints:
``/customers/{id}/wallets`` and ``/customers/{id}/wallets/ledger-entries``.

Views parse, open one transaction, call one ``worker.ledger`` function and shape the answer.
"""

from __future__ import annotations

from flask import Response, current_app, jsonify

from webhooks.api.customers import bp
from webhooks.api.schemas import (
    CreditLotListQuery,
    CustomerPath,
    LedgerEntryCreate,
    LedgerEntryListQuery,
    LedgerEntryPath,
)
from webhooks.auth import principal
from webhooks.errors import BODY_RESPONSES, DuplicateOut, billing_error_response
from webhooks.scopes import ByField, requires
from worker import ledger
from worker.access.apikeys import Principal
from worker.access.scopes import CREDIT, DEBIT, READ
from worker.errors import DuplicateEntry, IdempotencyKeyReused
from worker.infra.db import transaction
from worker.ledger import credit_terms, lot_views
from worker.ledger.lot_schemas import LedgerEntryDetailOut, LotListOut, LotOut, wallet_list
from worker.ledger.schemas import (
    LedgerEntryListOut,
    LedgerEntryOut,
    WalletListOut,
    WalletOut,
    dump,
)
from worker.models import Wallet, utcnow


def _tx():  # type: ignore[no-untyped-def]
    return transaction(current_app.config["SETTINGS"])


@bp.get("/customers/<customer_id>/wallets", responses={200: WalletListOut})
@requires(READ)
def list_wallets(path: CustomerPath) -> Response:
    """Every wallet of the customer, with how much of it expires within
    CREDIT_EXPIRY_NOTICE_DAYS and when its next lot expires, and their total in USD cents."""
    with _tx() as s:
        return jsonify(dump(wallet_list(s, path.customer_id)))


@bp.post(
    "/customers/<customer_id>/wallets/ledger-entries",
    responses={200: WalletOut, 409: DuplicateOut, **BODY_RESPONSES},
)
@requires(ByField("entry_type", {"credit": CREDIT, "debit": DEBIT}))
def create_ledger_entry(path: CustomerPath, body: LedgerEntryCreate) -> Response:
    """Credit or debit a wallet; answers with the updated wallet.

    400 ``INSUFFICIENT_BALANCE`` refuses a debit beyond the balance; 409
    ``DUPLICATE_IDEMPOTENCY_KEY`` (with ``x-should-retry: false``) means the key was already
    used with these parameters and nothing changed. A credit may carry ``expires_at`` and
    ``category`` (its lot's terms); on a debit either is a 422 naming it. A credit needs the
    ``credit`` scope (and at most the key's ``max_credit``), a debit the ``debit`` scope.
    """
    leg = entry_leg(path.customer_id, body, principal())
    try:
        posted = ledger.post_own(current_app.config["SETTINGS"], leg)
    except DuplicateEntry as duplicate:
        return duplicate_response(duplicate, duplicate.wallet)
    except IdempotencyKeyReused as reused:
        # Only on a refusal: a retry that changed a lot term is told which one.
        with _tx() as s:
            named = credit_terms.with_lot_terms(s, reused, leg)
        raise named from None
    return jsonify(dump(WalletOut.of(posted.wallet)))


def entry_leg(customer_id: str, body: LedgerEntryCreate, caller: Principal) -> ledger.Leg:
    """The leg a ledger-entries request posts, once ``caller`` may post it (the API's and the
    dashboard's credit and debit forms alike): a credit needs the ``credit`` scope and at most
    the key's ``max_credit``, a debit the ``debit`` scope."""
    is_credit = body.entry_type == "credit"
    if is_credit:
        caller.check_credit(body.amount, body.currency)
    else:
        caller.require(DEBIT)
    return ledger.Leg(
        customer_id=customer_id,
        currency=body.currency,
        amount=body.amount,
        is_credit=is_credit,
        reason=body.reason,
        key=ledger.client_key(body.idempotency_key),
        category=credit_terms.leg_category(body.category, is_credit=is_credit),
        expires_at=body.expires_at,
        actor=caller.actor,
    )


def duplicate_response(duplicate: DuplicateEntry, wallet: Wallet) -> Response:
    """The duplicate's answer (409), carrying the original entry and the wallet as it stands now."""
    return billing_error_response(
        duplicate,
        entry=dump(LedgerEntryOut.of(duplicate.entry)),
        wallet=dump(WalletOut.of(wallet)),
    )


@bp.get("/customers/<customer_id>/wallets/ledger-entries", responses={200: LedgerEntryListOut})
@requires(READ)
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


@bp.get(
    "/customers/<customer_id>/wallets/ledger-entries/<entry_id>",
    responses={200: LedgerEntryDetailOut},
)
@requires(READ)
def get_ledger_entry(path: LedgerEntryPath) -> Response:
    """One ledger entry, with the lot a credit created or what a debit took from which lots.

    404 ``LEDGER_ENTRY_NOT_FOUND`` for an unknown id and for another customer's entry alike.
    """
    with _tx() as s:
        now = utcnow()
        detail = lot_views.entry_detail(s, path.customer_id, path.entry_id)
        return jsonify(dump(LedgerEntryDetailOut.of_detail(detail, now)))


@bp.get("/customers/<customer_id>/wallets/credit-lots", responses={200: LotListOut})
@requires(READ)
def list_credit_lots(path: CustomerPath, query: CreditLotListQuery) -> Response:
    """The customer's credit lots, newest first: what each credit brought, what is left of
    it, when it expires."""
    with _tx() as s:
        now = utcnow()
        lots = lot_views.list_lots(
            s,
            path.customer_id,
            currency=query.currency,
            status=query.status,
            page_number=query.page_number,
            page_size=query.page_size,
            now=now,
        )
        return jsonify(dump(LotListOut(items=[LotOut.of(lot, now) for lot in lots])))
