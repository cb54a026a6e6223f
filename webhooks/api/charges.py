"""Wallet-first checkout and refunds to wallet credit (``worker.charges`` over HTTP).

A retried request answers 200 with the original result and ``Idempotent-Replayed: true``.
"""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, jsonify
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, model_validator

from webhooks.api.schemas import Amount, Currency, CustomerPath, _Body
from webhooks.auth import BEARER_SECURITY, actor, principal
from webhooks.errors import BODY_RESPONSES, COMMON_RESPONSES, ErrorOut
from webhooks.scopes import requires
from worker import charges
from worker.access.scopes import CREDIT, DEBIT, READ
from worker.charges import MAX_ID_LENGTH, MAX_REASON_LENGTH
from worker.charges.schemas import ChargeOut, RefundOut, ReversalOut
from worker.infra.db import transaction
from worker.ledger.schemas import dump

ERRORS = {**COMMON_RESPONSES, **BODY_RESPONSES}

bp = APIBlueprint(
    "wallet_charges",
    __name__,
    abp_tags=[Tag(name="Wallet charges & refunds")],
    abp_security=BEARER_SECURITY,
    abp_responses=ERRORS,
)


def _id(description: str, default: object = ...) -> object:
    return Field(default, min_length=1, max_length=MAX_ID_LENGTH, description=description)


class ChargePath(CustomerPath):
    charge_id: str = Field(max_length=64)


class ChargeCreate(_Body):
    amount: Amount
    currency: Currency
    order_id: StrictStr = _id("Your order; the default idempotency key is charge:{order_id}.")
    idempotency_key: StrictStr | None = _id(
        "Retries with the same key return the same charge (default charge:{order_id}).", None
    )
    reason: StrictStr | None = Field(None, max_length=MAX_REASON_LENGTH)
    allow_partial: StrictBool = Field(
        True,
        description="false: take the whole amount or nothing (400 INSUFFICIENT_BALANCE).",
    )


class ChargeReverse(_Body):
    # flask-openapi3 reads this to document the body as optional.
    model_config = ConfigDict(extra="ignore", openapi_extra={"required": False})  # type: ignore[typeddict-unknown-key]

    amount: Amount | None = Field(
        None, description="Minor units to give back; default: all that is left of the charge."
    )
    reason: StrictStr | None = Field(None, max_length=MAX_REASON_LENGTH)
    idempotency_key: StrictStr | None = _id(
        "Makes a partial reversal safe to retry. Reversing the rest (no amount) needs none.",
        None,
    )

    @model_validator(mode="before")
    @classmethod
    def _empty_body(cls, data: Any) -> Any:
        # "Reverse the rest" needs no parameters, so an empty body (or none) is welcome.
        return {} if data is None else data


class RefundCreate(_Body):
    amount: Amount
    currency: Currency
    payment_id: StrictStr = _id(
        "The payment refunded, a charge_id or a provider payment id (the entry's"
        " reference_object_id)."
    )
    refund_id: StrictStr | None = _id(
        "Credited once per refund_id (default: once per payment_id + amount).", None
    )
    reason: StrictStr | None = Field(None, max_length=MAX_REASON_LENGTH)


def _tx():  # type: ignore[no-untyped-def]
    return transaction(current_app.config["SETTINGS"])


def _answer(model: BaseModel, replayed: bool) -> Response:
    response = jsonify(dump(model))
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


@bp.post(
    "/customers/<customer_id>/wallets/charges",
    responses={200: ChargeOut, 400: ErrorOut},
)
@requires(DEBIT)
def create_charge(path: CustomerPath, body: ChargeCreate) -> Response:
    """Pay for an order from the wallet first: takes min(balance, amount).

    Charge the card for ``remaining_amount``; if that fails, reverse the charge. A retry with
    the same idempotency key returns the same charge (200, ``Idempotent-Replayed: true``) and
    never debits twice; the same key with other parameters is 422 ``IDEMPOTENCY_KEY_REUSED``
    naming them. ``allow_partial: false`` with too little balance is 400
    ``INSUFFICIENT_BALANCE`` and records nothing.
    """
    with _tx() as s:
        view = charges.charge(
            s,
            path.customer_id,
            amount=body.amount,
            currency=body.currency,
            order_id=body.order_id,
            idempotency_key=body.idempotency_key,
            reason=body.reason,
            allow_partial=body.allow_partial,
            actor=actor(),
        )
        return _answer(ChargeOut.of(view), view.replayed)


@bp.get("/customers/<customer_id>/wallets/charges/<charge_id>", responses={200: ChargeOut})
@requires(READ)
def get_charge(path: ChargePath) -> Response:
    """A charge: applied, reversed and remaining amounts, with its ledger entries."""
    with _tx() as s:
        return jsonify(dump(ChargeOut.of(charges.get_charge(s, path.customer_id, path.charge_id))))


@bp.post(
    "/customers/<customer_id>/wallets/charges/<charge_id>/reverse",
    responses={200: ReversalOut},
)
@requires(CREDIT)
def reverse_charge(path: ChargePath, body: ChargeReverse) -> Response:
    """Give the wallet part of a charge back (``payment_reversal``), all of it by default.

    Never more than what is left: a larger amount is 422 ``REVERSAL_EXCEEDS_CHARGE``.
    Reversing the rest when nothing is left is a no-op (``reversed_now: 0``).
    """
    with _tx() as s:
        reversal = charges.reverse(
            s,
            path.customer_id,
            path.charge_id,
            amount=body.amount,
            reason=body.reason,
            idempotency_key=body.idempotency_key,
            actor=actor(),
        )
        return _answer(ReversalOut.of_reversal(reversal), reversal.replayed)


@bp.post("/customers/<customer_id>/wallets/refunds", responses={200: RefundOut})
@requires(CREDIT)
def refund_to_wallet(path: CustomerPath, body: RefundCreate) -> Response:
    """Refund a payment as wallet credit (``refund``), once per refund id.

    ``payment_id`` must be a payment of this customer the service knows: a charge's
    ``charge_id`` (its card part), a top-up's provider payment, or a stored provider payment
    event; otherwise 422 ``UNKNOWN_PAYMENT`` naming ``payment_id`` (unless
    ``ALLOW_UNKNOWN_PAYMENT_REFUNDS``). What all refunds of a payment give back never exceeds
    it: more than is left is 422 ``REFUND_EXCEEDS_PAYMENT`` with ``remaining_amount``. An amount
    above ``WALLET_REFUND_MAX`` is 422 ``WALLET_REFUND_CAP_EXCEEDED`` naming the cap.
    Above the key's ``max_credit``: 403 ``CREDIT_LIMIT_EXCEEDED``.
    """
    principal().check_credit(body.amount, body.currency)
    with _tx() as s:
        refund = charges.refund_to_wallet(
            s,
            path.customer_id,
            amount=body.amount,
            currency=body.currency,
            payment_id=body.payment_id,
            refund_id=body.refund_id,
            reason=body.reason,
            actor=actor(),
        )
        return _answer(RefundOut.of(refund), refund.replayed)
