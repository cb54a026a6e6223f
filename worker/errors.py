"""Typed errors raised by the core. ``webhooks/errors.py`` maps each to its HTTP status (one
table); the CLI to exit 2.

Each carries what a caller needs to explain itself (``code``, a message, structured ``details``).
"""

from __future__ import annotations

from typing import Any


class BillingError(Exception):
    code = "BILLING_ERROR"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class ValidationFailed(BillingError):
    """Input rejected before anything was written; ``field`` names the culprit."""

    code = "VALIDATION_ERROR"

    def __init__(self, field: str, message: str, **details: Any) -> None:
        super().__init__(f"{field}: {message}", field=field, **details)
        self.field = field


class InvalidAmount(ValidationFailed):
    code = "INVALID_AMOUNT"

    def __init__(self, message: str, field: str = "amount") -> None:
        super().__init__(field, message)


class UnsupportedCurrency(ValidationFailed):
    code = "UNSUPPORTED_CURRENCY"

    def __init__(self, currency: object, supported: tuple[str, ...], field: str = "currency"):
        super().__init__(
            field,
            f"unsupported currency {currency!r}; supported: {', '.join(supported)}",
            supported=list(supported),
        )


class NotFound(BillingError):
    code = "NOT_FOUND"


class CustomerNotFound(NotFound):
    code = "CUSTOMER_NOT_FOUND"

    def __init__(self, customer_id: str) -> None:
        super().__init__(f"Customer {customer_id} not found", customer_id=customer_id)
        self.customer_id = customer_id


class InsufficientBalance(BillingError):
    code = "INSUFFICIENT_BALANCE"

    def __init__(self, *, balance: int, requested: int, currency: str) -> None:
        super().__init__(
            f"Insufficient balance: the {currency} wallet holds {balance}, "
            f"a debit of {requested} is refused",
            balance=balance,
            requested_amount=requested,
            currency=currency,
        )
        self.balance = balance
        self.requested = requested
        self.currency = currency


class DuplicateEntry(BillingError):
    """The idempotency key was already used with the same parameters: nothing new happened."""

    code = "DUPLICATE_IDEMPOTENCY_KEY"

    def __init__(self, entry: Any, wallet: Any = None) -> None:
        super().__init__(
            f"Idempotency key {entry.idempotency_key!r} was already used; "
            f"the original entry {entry.id} stands",
            entry_id=entry.id,
        )
        self.entry = entry
        # The wallet as it stands, when the poster read it for the answer (a 409's body).
        self.wallet = wallet


class IdempotencyKeyReused(BillingError):
    """Same idempotency key, different parameters: refused, naming what differs."""

    code = "IDEMPOTENCY_KEY_REUSED"

    def __init__(self, key: str, fields: list[str], original: Any) -> None:
        super().__init__(
            f"Idempotency key {key!r} was already used with different {', '.join(fields)}",
            idempotency_key=key,
            differing_fields=fields,
        )
        self.fields = fields
        self.original = original


class ChargeNotFound(NotFound):
    code = "CHARGE_NOT_FOUND"

    def __init__(self, charge_id: str) -> None:
        super().__init__(f"Wallet charge {charge_id} not found", charge_id=charge_id)
        self.charge_id = charge_id


class EntryNotFound(NotFound):
    """No such ledger entry for this customer: an entry of another customer is not found
    either, so an id never tells whose it is."""

    code = "LEDGER_ENTRY_NOT_FOUND"

    def __init__(self, entry_id: str) -> None:
        super().__init__(f"Ledger entry {entry_id} not found", entry_id=entry_id)
        self.entry_id = entry_id


class HoldNotFound(NotFound):
    """No such hold for this customer (another customer's hold is not found either)."""

    code = "HOLD_NOT_FOUND"

    def __init__(self, hold_id: str) -> None:
        super().__init__(f"Hold {hold_id} not found", hold_id=hold_id)
        self.hold_id = hold_id


class HoldNotActive(BillingError):
    """A capture or release of a hold that is no longer active (captured, released, expired
    or past its expiry): nothing changed."""

    code = "HOLD_NOT_ACTIVE"

    def __init__(self, hold_id: str, status: str, action: str) -> None:
        super().__init__(
            f"Hold {hold_id} is {status}: it cannot be {action}",
            hold_id=hold_id,
            status=status,
        )
        self.hold_id = hold_id
        self.status = status


class ReversalExceedsCharge(ValidationFailed):
    """A reversal larger than what is left of the charge: nothing was credited."""

    code = "REVERSAL_EXCEEDS_CHARGE"

    def __init__(self, *, requested: int, reversible: int, charge_id: str) -> None:
        super().__init__(
            "amount",
            f"{requested} exceeds the {reversible} left to reverse on charge {charge_id}",
            requested_amount=requested,
            reversible_amount=reversible,
            charge_id=charge_id,
        )


class RefundCapExceeded(ValidationFailed):
    """A refund to wallet above WALLET_REFUND_MAX (a guard against fat-finger refunds)."""

    code = "WALLET_REFUND_CAP_EXCEEDED"

    def __init__(
        self, *, requested: int, cap: int, currency: str, setting: str = "WALLET_REFUND_MAX"
    ) -> None:
        super().__init__(
            "amount",
            f"{requested} {currency} exceeds {setting} ({cap} minor units per refund)",
            requested_amount=requested,
            cap=cap,
            setting=setting,
        )


class RefundExceedsPayment(ValidationFailed):
    """A refund to wallet larger than what is left of its payment: nothing was credited."""

    code = "REFUND_EXCEEDS_PAYMENT"

    def __init__(self, *, requested: int, remaining: int, payment_id: str, currency: str) -> None:
        super().__init__(
            "amount",
            f"{requested} {currency} exceeds the {remaining} left to refund of payment "
            f"{payment_id}",
            requested_amount=requested,
            remaining_amount=remaining,
            payment_id=payment_id,
            currency=currency,
        )


class UnknownPayment(ValidationFailed):
    """A refund to wallet of a payment this customer never made, as far as the service knows.

    One answer for a payment of another customer and one never seen, so it tells a caller
    nothing about other customers' payments."""

    code = "UNKNOWN_PAYMENT"

    def __init__(self, payment_id: str, customer_id: str) -> None:
        super().__init__(
            "payment_id",
            f"{payment_id!r} is not a payment of customer {customer_id} known to this service",
            payment_id=payment_id,
        )


# -- Refusals of a request before it reaches the core: who is asking, what was sent. ---------
# Raised by the HTTP side; typed here so that its one status table maps them like any other.


class Unauthorized(BillingError):
    """No valid API key: deliberately the same answer for a missing, malformed, unknown or
    revoked one."""

    code = "UNAUTHORIZED"

    def __init__(self, message: str = "A valid API key is required") -> None:
        super().__init__(message)


class PortalLinkInvalid(Unauthorized):
    """A customer portal link that is tampered with, of another customer, or expired."""

    code = "PORTAL_LINK_INVALID"


class TooManyFailedAuthentications(BillingError):
    """This client address failed to authenticate too often; valid keys are never refused."""

    code = "TOO_MANY_FAILED_AUTHENTICATIONS"

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            f"Too many failed authentications from this address; retry in {retry_after} s",
            retry_after=retry_after,
        )
        self.retry_after = retry_after


class Forbidden(BillingError):
    """A valid API key that may not do this."""

    code = "FORBIDDEN"


class ScopeRequired(Forbidden):
    """A valid API key without the scope the route (or, for ledger entries, the body) needs."""

    code = "FORBIDDEN"

    def __init__(self, scope: str) -> None:
        super().__init__(f"This API key lacks the {scope} scope", required_scope=scope)


class CsrfTokenInvalid(Forbidden):
    """A dashboard form posted without this session's CSRF token: not sent by our page."""

    code = "CSRF_TOKEN_INVALID"

    def __init__(self) -> None:
        super().__init__("The form's CSRF token is missing or invalid; reload the page")


class CreditLimitExceeded(Forbidden):
    """A credit above the key's ``max_credit``: a per-key bound on any single credit."""

    code = "CREDIT_LIMIT_EXCEEDED"

    def __init__(self, *, requested: int, limit: int, currency: str) -> None:
        super().__init__(
            f"amount: {requested} exceeds this API key's max_credit of {limit} "
            f"(minor units of {currency})",
            field="amount",
            limit="max_credit",
            max_credit=limit,
            requested_amount=requested,
            currency=currency,
        )


class UnsupportedContentType(ValidationFailed):
    code = "UNSUPPORTED_CONTENT_TYPE"


class MalformedInput(ValidationFailed):
    """Input that cannot be read at all (not UTF-8, not JSON, an unusable header or event id),
    as opposed to readable input with an invalid value."""

    code = "MALFORMED_INPUT"


class MalformedBody(MalformedInput):
    code = "MALFORMED_BODY"


class MalformedJSON(MalformedInput):
    code = "MALFORMED_JSON"


class InvalidHeader(MalformedInput):
    code = "INVALID_HEADER"


class InvalidEvent(MalformedInput):
    """A signed provider delivery without a usable event id or type."""

    code = "INVALID_EVENT"


class BadSignature(BillingError):
    """A provider webhook whose signature does not verify (wrong secret, tampered body, stale
    or future timestamp): nothing was stored."""

    code = "INVALID_SIGNATURE"

    def __init__(self, header: str) -> None:
        super().__init__(f"{header}: verification failed")
        self.header = header


class ProviderDisabled(NotFound):
    """A provider whose webhook secret is not configured: never accepted unsigned."""

    code = "PROVIDER_DISABLED"

    def __init__(self, provider: str) -> None:
        super().__init__(f"{provider} webhooks are not configured on this service")
        self.provider = provider


class TaskNotFound(NotFound):
    code = "TASK_NOT_FOUND"

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"name: unknown task {name!r}", field="name", known=known)
        self.name = name


class BrokerUnavailable(BillingError):
    """The task broker did not take the message: nothing was enqueued; retry later."""

    code = "BROKER_UNAVAILABLE"

    def __init__(self) -> None:
        super().__init__("The task broker is unavailable")
