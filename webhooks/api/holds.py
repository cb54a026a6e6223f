"""Holds on a wallet: reserve before work, capture what it cost, release the rest.

``/customers/{id}/wallets/holds`` (not in Dodo's API; its SDK reaches them with
``client.post``). Views parse, open one transaction, call one ``worker.ledger.holds``
function and shape the answer.
"""

from __future__ import annotations

from flask import Response, current_app, jsonify

from webhooks.api.customers import bp
from webhooks.api.schemas import (
    CustomerPath,
    HoldCapture,
    HoldCreate,
    HoldListQuery,
    HoldPath,
)
from webhooks.auth import actor
from webhooks.errors import BODY_RESPONSES, ConflictOut
from webhooks.scopes import requires
from worker.access.scopes import DEBIT, READ
from worker.infra.db import transaction
from worker.ledger import holds
from worker.ledger.hold_schemas import HoldListOut, HoldOut
from worker.ledger.schemas import dump


def _tx():  # type: ignore[no-untyped-def]
    return transaction(current_app.config["SETTINGS"])


@bp.post("/customers/<customer_id>/wallets/holds", responses={200: HoldOut, **BODY_RESPONSES})
@requires(DEBIT)
def create_hold(path: CustomerPath, body: HoldCreate) -> Response:
    """Reserve ``amount`` of the available balance before work whose cost is not yet known.

    400 ``INSUFFICIENT_BALANCE`` when the available balance (balance - held) is short;
    nothing is held. The same ``idempotency_key`` with the same parameters answers the same
    hold; with other parameters, 422 ``IDEMPOTENCY_KEY_REUSED``.
    """
    with _tx() as s:
        outcome = holds.create_hold(
            s,
            customer_id=path.customer_id,
            currency=body.currency,
            amount=body.amount,
            idempotency_key=body.idempotency_key,
            reason=body.reason,
            reference_object_id=body.reference_object_id,
            expires_in_seconds=body.expires_in_seconds,
            actor=actor(),
        )
        assert outcome.hold is not None
        return jsonify(dump(HoldOut.of(outcome.hold)))


@bp.get("/customers/<customer_id>/wallets/holds", responses={200: HoldListOut})
@requires(READ)
def list_holds(path: CustomerPath, query: HoldListQuery) -> Response:
    """The customer's holds (and dispute holds), newest first."""
    with _tx() as s:
        found = holds.list_holds(
            s,
            path.customer_id,
            status=query.status,
            currency=query.currency,
            kind=query.kind,
            page_number=query.page_number,
            page_size=query.page_size,
        )
        return jsonify(dump(HoldListOut(items=[HoldOut.of(h) for h in found])))


@bp.get("/customers/<customer_id>/wallets/holds/<hold_id>", responses={200: HoldOut})
@requires(READ)
def get_hold(path: HoldPath) -> Response:
    """One hold; 404 ``HOLD_NOT_FOUND`` for an unknown id and another customer's alike."""
    with _tx() as s:
        return jsonify(dump(HoldOut.of(holds.get_hold(s, path.customer_id, path.hold_id))))


@bp.post(
    "/customers/<customer_id>/wallets/holds/<hold_id>/capture",
    responses={200: HoldOut, 409: ConflictOut, **BODY_RESPONSES},
)
@requires(DEBIT)
def capture_hold(path: HoldPath, body: HoldCapture) -> Response:
    """Debit ``amount`` (default the whole hold) as one ledger entry and release the rest.

    More than the hold is a 422 naming ``amount``. Repeating the capture answers the same
    hold; a hold released, expired (or past ``expires_at``) or captured for another amount
    is a 409 ``HOLD_NOT_ACTIVE``.
    """
    with _tx() as s:
        outcome = holds.capture_hold(
            s, customer_id=path.customer_id, hold_id=path.hold_id, amount=body.amount, actor=actor()
        )
        assert outcome.hold is not None
        return jsonify(dump(HoldOut.of(outcome.hold)))


@bp.post(
    "/customers/<customer_id>/wallets/holds/<hold_id>/release",
    responses={200: HoldOut, 409: ConflictOut},
)
@requires(DEBIT)
def release_hold(path: HoldPath) -> Response:
    """Release the whole hold. Repeating it answers the same hold (an expired hold answers
    as it stands); a captured hold is a 409 ``HOLD_NOT_ACTIVE``."""
    with _tx() as s:
        outcome = holds.release_hold(
            s, customer_id=path.customer_id, hold_id=path.hold_id, actor=actor()
        )
        assert outcome.hold is not None
        return jsonify(dump(HoldOut.of(outcome.hold)))
