"""Dodo's official SDK against the lot-reading additions, served by gunicorn on PostgreSQL: the
wallet list still parses with ``expiring_soon`` and ``next_expiry_at`` in it, and the new
routes are reachable through the SDK's own request methods."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from dodopayments import DodoPayments

from tests.support.lots import credit, debit
from tests.support.processes import create_pg_database, drop_pg_database, gunicorn, process_env
from worker import ledger
from worker.config import Settings
from worker.infra import migrate
from worker.infra.db import get_engine, transaction
from worker.ledger.schemas import iso
from worker.models import utcnow

pytestmark = pytest.mark.slow

API_KEY = "sdk-lots-key-0123456789abcdefghijklmn"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Settings]]:
    """gunicorn on a fresh, migrated PostgreSQL database; (its base URL, the settings)."""
    name, url = create_pg_database("bw_sdk_lots")
    settings = Settings(database_url=url, api_key=API_KEY)
    migrate.upgrade(settings)
    env = process_env(DATABASE_URL=url, BILLING_API_KEY=API_KEY)
    try:
        with gunicorn(env, tmp_path_factory.mktemp("gunicorn"), workers=1) as base_url:
            yield base_url, settings
    finally:
        get_engine(settings).dispose()
        drop_pg_database(name)


@pytest.fixture
def client(served) -> Iterator[DodoPayments]:
    with DodoPayments(
        bearer_token=API_KEY, base_url=served[0], http_client=httpx.Client(timeout=10)
    ) as sdk:
        yield sdk


def test_sdk_parses_wallets_with_their_expiry_summary(client: DodoPayments, served) -> None:
    settings = served[1]
    customer_id = client.customers.create(email="sdk-lots@example.com", name="L").customer_id
    soonest = utcnow() + timedelta(days=2)

    def tx():  # type: ignore[no-untyped-def]
        return transaction(settings)

    credit(tx, customer_id, 300, expires_at=soonest, category="promotional")
    credit(tx, customer_id, 700)
    spent = debit(tx, customer_id, 100)
    wallets = client.customers.wallets.list(customer_id)
    usd = next(w for w in wallets.items if w.currency == "USD")
    assert (usd.balance, wallets.total_balance_usd) == (900, 900)
    extra = usd.to_dict()
    assert (extra["expiring_soon"], extra["next_expiry_at"]) == (200, iso(soonest))
    detail = client.get(
        f"/customers/{customer_id}/wallets/ledger-entries/{spent.entry.id}", cast_to=object
    )
    assert [c["amount"] for c in detail["consumed_lots"]] == [100]
    lots = client.get(f"/customers/{customer_id}/wallets/credit-lots", cast_to=object)
    assert [(x["remaining"], x["status"]) for x in lots["items"]] == [
        (700, "active"),
        (200, "active"),
    ]
    with tx() as s:
        assert ledger.verify(s).ok
