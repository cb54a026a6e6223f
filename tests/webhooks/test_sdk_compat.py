"""Dodo Payments' official Python SDK drives this service, served by gunicorn on PostgreSQL.

The seed document's JavaScript examples are replayed here in Python, one function each, with
the same calls and the same error handling.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import dodopayments
import httpx
import pytest
from dodopayments import DodoPayments

from tests.support.processes import create_pg_database, drop_pg_database, gunicorn, process_env
from worker.access import apikeys
from worker.config import Settings
from worker.infra import migrate
from worker.infra.db import get_engine, transaction

pytestmark = pytest.mark.slow

BOOTSTRAP_KEY = "sdk-test-bootstrap-key-0123456789abcdef"
# The SDK's key: a stored key with every scope but admin (set by the server fixture), so the
# whole suite proves that read + customers + debit + credit is all the SDK ever needs.
SDK_SCOPES = ("read", "customers", "debit", "credit")


class RequestLog:
    """Counts the HTTP requests the SDK actually sends (retries included)."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> None:
        self.requests.append(request)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """gunicorn (2 workers) on a fresh, migrated PostgreSQL database holding the SDK's key;
    yields the base URL and that key."""
    name, url = create_pg_database("bw_sdk")
    settings = Settings(database_url=url)
    migrate.upgrade(settings)
    with transaction(settings) as session:
        _, sdk_key = apikeys.create_key(session, name="sdk", scopes=SDK_SCOPES)
    get_engine(settings).dispose()
    env = process_env(DATABASE_URL=url, BILLING_API_KEY=BOOTSTRAP_KEY)
    try:
        with gunicorn(env, tmp_path_factory.mktemp("gunicorn"), workers=2) as base_url:
            yield base_url, sdk_key
    finally:
        get_engine(settings).dispose()
        drop_pg_database(name)


@pytest.fixture(scope="module")
def server(stack: tuple[str, str]) -> str:
    """The server's base URL."""
    return stack[0]


@pytest.fixture
def log() -> RequestLog:
    """Every request the client sends."""
    return RequestLog()


@pytest.fixture
def client(stack: tuple[str, str], log: RequestLog) -> Iterator[DodoPayments]:
    """The official SDK, unchanged but for ``base_url``; default retries (2) left on."""
    server, sdk_key = stack
    http = httpx.Client(event_hooks={"request": [log]}, timeout=10)
    with DodoPayments(bearer_token=sdk_key, base_url=server, http_client=http) as sdk:
        yield sdk


@pytest.fixture
def customer_id(client: DodoPayments) -> str:
    """A new customer, created through the SDK."""
    email = f"user-{uuid.uuid4().hex[:12]}@example.com"
    return client.customers.create(email=email, name="SDK User").customer_id


def usd_balance(client: DodoPayments, customer_id: str) -> int:
    wallets = client.customers.wallets.list(customer_id)
    return next(w.balance for w in wallets.items if w.currency == "USD")


# -- the routes, one by one -----------------------------------------------------------------


def test_sdk_creates_retrieves_updates_and_lists_customers(client: DodoPayments) -> None:
    email = f"ada-{uuid.uuid4().hex[:8]}@example.com"
    created = client.customers.create(
        email=email, name="Ada", phone_number="+15550100", metadata={"plan": "pro"}
    )
    assert isinstance(created, dodopayments.types.Customer)
    assert created.customer_id.startswith("cus_")
    assert (created.email, created.name, created.phone_number) == (email, "Ada", "+15550100")
    assert created.metadata == {"plan": "pro"}
    assert created.created_at.tzinfo is not None

    fetched = client.customers.retrieve(created.customer_id)
    assert fetched.customer_id == created.customer_id

    updated = client.customers.update(created.customer_id, name="Ada L.", metadata={"plan": "max"})
    assert (updated.name, updated.metadata, updated.email) == ("Ada L.", {"plan": "max"}, email)

    page = client.customers.list(email=email, page_number=0, page_size=10)
    assert [c.customer_id for c in page.items] == [created.customer_id]
    assert client.customers.list(email=email, page_number=1).items == []


def test_sdk_new_customer_has_zero_usd_and_inr_wallets(client: DodoPayments, customer_id) -> None:
    wallets = client.customers.wallets.list(customer_id)
    assert [(w.currency, w.balance) for w in wallets.items] == [("USD", 0), ("INR", 0)]
    assert wallets.total_balance_usd == 0
    assert all(w.customer_id == customer_id for w in wallets.items)


def test_sdk_credit_and_debit_return_the_wallet(client: DodoPayments, customer_id) -> None:
    wallet = client.customers.wallets.ledger_entries.create(
        customer_id, amount=10000, currency="USD", entry_type="credit", reason="Welcome bonus"
    )
    assert (wallet.balance, wallet.currency, wallet.customer_id) == (10000, "USD", customer_id)
    wallet = client.customers.wallets.ledger_entries.create(
        customer_id, amount=2500, currency="USD", entry_type="debit", reason="usage"
    )
    assert wallet.balance == 7500
    assert client.customers.wallets.list(customer_id).total_balance_usd == 7500


def test_sdk_insufficient_balance_is_a_400_bad_request(
    client: DodoPayments, customer_id, log: RequestLog
) -> None:
    log.requests.clear()
    with pytest.raises(dodopayments.BadRequestError) as caught:
        client.customers.wallets.ledger_entries.create(
            customer_id, amount=1, currency="USD", entry_type="debit", idempotency_key="d1"
        )
    error = caught.value
    assert isinstance(error, dodopayments.APIStatusError)
    assert error.status_code == 400
    assert "Insufficient balance" in error.message
    assert error.body["code"] == "INSUFFICIENT_BALANCE"
    assert error.body["balance"] == 0
    assert len(log.requests) == 1


def test_sdk_duplicate_idempotency_key_is_a_409_without_retries(
    client: DodoPayments, customer_id, log: RequestLog
) -> None:
    entries = client.customers.wallets.ledger_entries
    entries.create(
        customer_id, amount=5000, currency="USD", entry_type="credit", idempotency_key="welcome"
    )
    log.requests.clear()
    with pytest.raises(dodopayments.ConflictError) as caught:
        entries.create(
            customer_id, amount=5000, currency="USD", entry_type="credit", idempotency_key="welcome"
        )
    # The SDK retries every 409 twice with back-off unless the server says x-should-retry:
    # false; exactly one request means it obeyed and returned at once.
    assert len(log.requests) == 1
    assert caught.value.response.headers["x-should-retry"] == "false"
    body = caught.value.body
    assert body["code"] == "DUPLICATE_IDEMPOTENCY_KEY"
    assert (body["entry"]["amount"], body["wallet"]["balance"]) == (5000, 5000)
    assert len(entries.list(customer_id).items) == 1
    assert usd_balance(client, customer_id) == 5000


def test_sdk_reused_key_with_other_amount_is_422(client: DodoPayments, customer_id) -> None:
    entries = client.customers.wallets.ledger_entries
    entries.create(
        customer_id, amount=100, currency="USD", entry_type="credit", idempotency_key="k"
    )
    with pytest.raises(dodopayments.UnprocessableEntityError) as caught:
        entries.create(
            customer_id, amount=200, currency="USD", entry_type="credit", idempotency_key="k"
        )
    assert caught.value.body["differing_fields"] == ["amount"]


def test_sdk_credit_with_expiry_and_category_through_extra_body(
    client: DodoPayments, customer_id, log: RequestLog
) -> None:
    entries = client.customers.wallets.ledger_entries
    terms = {"expires_at": "2031-01-31T00:00:00Z", "category": "promotional"}
    wallet = entries.create(
        customer_id,
        amount=3000,
        currency="USD",
        entry_type="credit",
        idempotency_key="promo-1",
        extra_body=terms,
    )
    assert (wallet.balance, wallet.currency, wallet.customer_id) == (3000, "USD", customer_id)
    assert json.loads(log.requests[-1].content)["expires_at"] == "2031-01-31T00:00:00Z"
    # The terms are part of the request: repeated, a duplicate; changed, refused naming them.
    with pytest.raises(dodopayments.ConflictError):
        entries.create(
            customer_id,
            amount=3000,
            currency="USD",
            entry_type="credit",
            idempotency_key="promo-1",
            extra_body={"expires_at": "2031-01-31T05:30:00+05:30", "category": "promotional"},
        )
    with pytest.raises(dodopayments.UnprocessableEntityError) as caught:
        entries.create(
            customer_id,
            amount=3000,
            currency="USD",
            entry_type="credit",
            idempotency_key="promo-1",
            extra_body={**terms, "expires_at": "2031-03-01T00:00:00Z"},
        )
    assert caught.value.body["differing_fields"] == ["expires_at"]
    for body, field in (
        ({"expires_at": "2020-01-01T00:00:00Z"}, "expires_at"),
        ({"category": "gift"}, "category"),
    ):
        with pytest.raises(dodopayments.UnprocessableEntityError) as caught:
            entries.create(
                customer_id, amount=1, currency="USD", entry_type="credit", extra_body=body
            )
        assert caught.value.body["field"] == field
    with pytest.raises(dodopayments.UnprocessableEntityError) as caught:
        entries.create(customer_id, amount=1, currency="USD", entry_type="debit", extra_body=terms)
    assert caught.value.body["field"] == "category"  # the first term a debit refuses
    assert usd_balance(client, customer_id) == 3000


def test_sdk_errors_map_to_typed_exceptions(client: DodoPayments, server: str) -> None:
    with pytest.raises(dodopayments.NotFoundError):
        client.customers.retrieve("cus_does_not_exist")
    with pytest.raises(dodopayments.NotFoundError):
        client.customers.wallets.list("cus_does_not_exist")
    with DodoPayments(bearer_token="wrong", base_url=server, max_retries=0) as stranger:
        with pytest.raises(dodopayments.AuthenticationError):
            stranger.customers.list()
    with pytest.raises(dodopayments.UnprocessableEntityError) as caught:
        client.customers.wallets.ledger_entries.list("cus_x", page_size=101)
    assert caught.value.body["field"] == "page_size"


def test_sdk_lists_entries_by_currency_and_explicit_page(client: DodoPayments, customer_id) -> None:
    entries = client.customers.wallets.ledger_entries
    for amount in range(1, 13):
        entries.create(customer_id, amount=amount, currency="USD", entry_type="credit")
    entries.create(customer_id, amount=500, currency="INR", entry_type="credit")

    page0 = entries.list(customer_id, currency="USD", page_number=0, page_size=5)
    page1 = entries.list(customer_id, currency="USD", page_number=1, page_size=5)
    page2 = entries.list(customer_id, currency="USD", page_number=2, page_size=5)
    assert [e.amount for e in page0.items] == [12, 11, 10, 9, 8]
    assert [e.amount for e in page1.items] == [7, 6, 5, 4, 3]
    assert [e.amount for e in page2.items] == [2, 1]
    assert entries.list(customer_id, currency="USD", page_number=3, page_size=5).items == []

    first = page0.items[0]
    assert (first.currency, first.customer_id, first.is_credit) == ("USD", customer_id, True)
    assert (first.before_balance, first.after_balance) == (66, 78)
    assert first.event_type == "merchant_adjustment"
    assert first.id.startswith("wle_")

    inr = entries.list(customer_id, currency="INR")
    assert [(e.amount, e.currency) for e in inr.items] == [(500, "INR")]
    assert len(entries.list(customer_id).items) == 10  # default page size


# -- the seed document's examples, replayed -------------------------------------------------


def give_welcome_credits(client: DodoPayments, customer_id: str) -> None:
    client.customers.wallets.ledger_entries.create(
        customer_id,
        amount=10000,  # $100 in cents
        currency="USD",
        entry_type="credit",
        reason="Welcome bonus - 100 API credits",
        idempotency_key=f"welcome_{customer_id}_{time.time_ns()}",
    )


def charge_for_api_usage(client: DodoPayments, customer_id: str, usage_cost: int) -> str:
    try:
        client.customers.wallets.ledger_entries.create(
            customer_id,
            amount=usage_cost,  # cost in cents
            currency="USD",
            entry_type="debit",
            reason=f"API usage - {usage_cost} credits consumed",
            idempotency_key=f"usage_{customer_id}_{time.time_ns()}",
        )
    except dodopayments.APIStatusError as error:
        if error.status_code == 400:
            return "Customer needs to buy more credits"
        raise
    return "charged"


def add_credits_safely(
    client: DodoPayments, customer_id: str, amount: int, reason: str, idempotency_key: str
) -> dict:
    try:
        result = client.customers.wallets.ledger_entries.create(
            customer_id,
            amount=amount,
            currency="USD",
            entry_type="credit",
            reason=reason,
            idempotency_key=idempotency_key,
        )
        return {"success": True, "wallet": result}
    except dodopayments.APIStatusError as error:
        if error.status_code == 400 and "Insufficient balance" in error.message:
            return {"success": False, "error": "INSUFFICIENT_BALANCE"}
        if error.status_code == 409:
            return {"success": True, "wallet": None, "duplicate": True}
        raise


def check_balance_before_operation(
    client: DodoPayments, customer_id: str, required_amount: int
) -> int:
    wallets = client.customers.wallets.list(customer_id)
    usd_wallet = next((w for w in wallets.items if w.currency == "USD"), None)
    if usd_wallet is None or usd_wallet.balance < required_amount:
        raise RuntimeError("Not enough credits for this operation")
    return usd_wallet.balance


def test_seed_api_credit_system(client: DodoPayments, customer_id) -> None:
    give_welcome_credits(client, customer_id)
    assert usd_balance(client, customer_id) == 10000
    assert charge_for_api_usage(client, customer_id, 2500) == "charged"
    assert charge_for_api_usage(client, customer_id, 7500) == "charged"
    assert usd_balance(client, customer_id) == 0
    assert charge_for_api_usage(client, customer_id, 1) == "Customer needs to buy more credits"
    assert usd_balance(client, customer_id) == 0


def test_seed_prepaid_billing_steps(client: DodoPayments, customer_id) -> None:
    entries = client.customers.wallets.ledger_entries
    payment_id, usage_id = "pay_123", "use_456"
    # 1. Welcome: the key has no timestamp, so a repeated welcome is refused as a duplicate.
    welcome = {
        "amount": 5000,
        "currency": "USD",
        "entry_type": "credit",
        "reason": "Welcome bonus for new customer",
        "idempotency_key": f"welcome_{customer_id}",
    }
    entries.create(customer_id, **welcome)
    with pytest.raises(dodopayments.ConflictError):
        entries.create(customer_id, **welcome)
    # 2. A purchase, 3. usage.
    entries.create(
        customer_id,
        amount=2000,
        currency="USD",
        entry_type="credit",
        reason="Credit purchase - 2000 credits",
        idempotency_key=f"purchase_{payment_id}",
    )
    entries.create(
        customer_id,
        amount=6500,
        currency="USD",
        entry_type="debit",
        reason="Service usage - 6500 credits",
        idempotency_key=f"usage_{usage_id}",
    )
    # 4. Balance monitoring: under $10 means a low-balance notification.
    wallets = client.customers.wallets.list(customer_id)
    balance = next(w for w in wallets.items if w.currency == "USD").balance
    assert balance == 500
    assert balance < 1000


def test_seed_multi_currency_credits(client: DodoPayments, customer_id) -> None:
    entries = client.customers.wallets.ledger_entries
    entries.create(
        customer_id,
        amount=20000,  # $200 in cents
        currency="USD",
        entry_type="credit",
        reason="USD credit purchase",
        idempotency_key="usd_purchase_pay_1",
    )
    entries.create(
        customer_id,
        amount=1500000,  # 15,000 rupees in paise
        currency="INR",
        entry_type="credit",
        reason="INR credit purchase",
        idempotency_key="inr_purchase_pay_2",
    )
    wallets = client.customers.wallets.list(customer_id)
    assert {w.currency: w.balance for w in wallets.items} == {"USD": 20000, "INR": 1500000}
    assert wallets.total_balance_usd == 20000 + 18000  # INR at 0.012 USD


def test_seed_add_credits_safely_reports_duplicates_as_success(
    client: DodoPayments, customer_id, log: RequestLog
) -> None:
    key = f"Refill_{customer_id}_{time.time_ns()}"
    first = add_credits_safely(client, customer_id, 3000, "Refill", key)
    assert first["success"] and first["wallet"].balance == 3000
    log.requests.clear()
    again = add_credits_safely(client, customer_id, 3000, "Refill", key)
    assert again == {"success": True, "wallet": None, "duplicate": True}
    assert len(log.requests) == 1
    assert usd_balance(client, customer_id) == 3000


def test_seed_check_balance_before_operation(client: DodoPayments, customer_id) -> None:
    with pytest.raises(RuntimeError, match="Not enough credits"):
        check_balance_before_operation(client, customer_id, 1)
    give_welcome_credits(client, customer_id)
    assert check_balance_before_operation(client, customer_id, 10000) == 10000
    with pytest.raises(RuntimeError, match="Not enough credits"):
        check_balance_before_operation(client, customer_id, 10001)


def test_sdk_entries_carry_their_actor_as_an_extra_field(client: DodoPayments, customer_id) -> None:
    client.customers.wallets.ledger_entries.create(
        customer_id, amount=100, currency="USD", entry_type="credit", reason="bonus"
    )
    [entry] = client.customers.wallets.ledger_entries.list(customer_id, page_number=0).items
    key_id = entry.model_extra["actor"]
    assert key_id.startswith("key_")  # the stored key the SDK uses, not the bootstrap key


def test_gunicorn_log_has_no_tracebacks(server: str, tmp_path_factory) -> None:
    logs = list(Path(tmp_path_factory.getbasetemp()).glob("gunicorn*/gunicorn-*.log"))
    assert logs
    for path in logs:
        assert "Traceback" not in path.read_text()
