"""Migrations: one head; upgrade, downgrade and upgrade again; the result matches the models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from tests.support.processes import create_pg_database, drop_pg_database
from worker.config import Settings
from worker.infra import migrate
from worker.infra.db import get_engine
from worker.models import Base


@pytest.fixture
def empty_settings(backend: str, tmp_path: Path) -> Iterator[Settings]:
    """Settings for a brand-new, empty database on ``backend``."""
    if backend == "sqlite":
        yield Settings(database_url=f"sqlite:///{tmp_path / 'fresh.db'}")
        return
    name, url = create_pg_database("bw_migr")
    try:
        yield Settings(database_url=url)
    finally:
        get_engine(Settings(database_url=url)).dispose()
        drop_pg_database(name)


def _tables(settings: Settings) -> set[str]:
    return set(inspect(get_engine(settings)).get_table_names()) - {"alembic_version"}


def _diff(settings: Settings) -> list:
    with get_engine(settings).connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "render_as_batch": conn.dialect.name == "sqlite"}
        )
        return compare_metadata(context, Base.metadata)


def test_one_head() -> None:
    assert len(migrate.heads()) == 1


def test_upgrade_downgrade_upgrade_from_empty(empty_settings: Settings) -> None:
    assert _tables(empty_settings) == set()
    migrate.upgrade(empty_settings)
    assert _tables(empty_settings) == set(Base.metadata.tables)
    migrate.downgrade(empty_settings)
    assert _tables(empty_settings) == set()
    migrate.upgrade(empty_settings)
    assert _tables(empty_settings) == set(Base.metadata.tables)


def test_migrated_schema_matches_models(empty_settings: Settings) -> None:
    migrate.upgrade(empty_settings)
    assert _diff(empty_settings) == []


def test_downgrade_removes_immutability_triggers(empty_settings: Settings) -> None:
    migrate.upgrade(empty_settings)
    migrate.downgrade(empty_settings)
    engine = get_engine(empty_settings)
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            rows = conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type='trigger'")
        else:
            rows = conn.exec_driver_sql(
                "SELECT proname FROM pg_proc WHERE proname = 'ledger_entries_immutable'"
            )
        assert rows.all() == []


def test_key_scopes_classify_stored_keys_and_old_retries_still_match(
    empty_settings: Settings,
) -> None:
    """0009: a stored client key still answers its retry; the system's keys move aside."""
    from sqlalchemy import text

    from worker import ledger
    from worker.errors import DuplicateEntry
    from worker.infra.db import transaction

    migrate.upgrade(empty_settings, "0006")
    params = {
        "reason": None,
        "reference_object_id": None,
        "currency": "USD",
        "is_credit": True,
    }
    rows = [  # (id, key, event type, amount): written before the upgrade
        ("wle_client", "k1", "merchant_adjustment", 5),
        ("wle_system", "payment:pay_1", "payment", 2000),
    ]
    with get_engine(empty_settings).begin() as conn:
        conn.execute(
            text(
                "INSERT INTO customers (customer_id, business_id, email, email_normalized, name,"
                " metadata, created_at) VALUES ('cus_1', 'bus', 'a@x.io', 'a@x.io', 'A', '{}',"
                " CURRENT_TIMESTAMP)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO wallets (customer_id, currency, balance, created_at, updated_at)"
                " VALUES ('cus_1', 'USD', 2005, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
        )
        before = 0
        for entry_id, key, event_type, amount in rows:
            conn.execute(
                text(
                    "INSERT INTO ledger_entries (id, business_id, customer_id, currency, amount,"
                    " is_credit, before_balance, after_balance, event_type, idempotency_key,"
                    " fingerprint, created_at) VALUES (:id, 'bus', 'cus_1', 'USD', :amount,"
                    " :is_credit, :before, :after, :event_type, :key, :fp, CURRENT_TIMESTAMP)"
                ),
                {
                    "id": entry_id,
                    "amount": amount,
                    "is_credit": True,
                    "before": before,
                    "after": before + amount,
                    "event_type": event_type,
                    "key": key,
                    "fp": ledger.fingerprint(amount=amount, event_type=event_type, **params),
                },
            )
            before += amount
        for charge_id, key in (("wch_default", "charge:ord_1"), ("wch_client", "mine")):
            conn.execute(
                text(
                    "INSERT INTO wallet_charges (charge_id, customer_id, currency, order_id,"
                    " idempotency_key, requested_amount, applied_amount, reversed_amount,"
                    " created_at) VALUES (:id, 'cus_1', 'USD', 'ord_1', :key, 0, 0, 0,"
                    " CURRENT_TIMESTAMP)"
                ),
                {"id": charge_id, "key": key},
            )
    migrate.upgrade(empty_settings)
    with get_engine(empty_settings).connect() as conn:
        scopes = dict(conn.execute(text("SELECT id, key_scope FROM ledger_entries")).all())
        charge_scopes = dict(
            conn.execute(text("SELECT charge_id, key_scope FROM wallet_charges")).all()
        )
    assert scopes == {"wle_client": "client", "wle_system": "system"}
    assert charge_scopes == {"wch_default": "system", "wch_client": "client"}
    settings = empty_settings.with_overrides(api_key="k")
    with transaction(settings) as s:
        with pytest.raises(DuplicateEntry) as duplicate:  # the client's old retry
            ledger.post_entry(
                s,
                customer_id="cus_1",
                currency="USD",
                amount=5,
                is_credit=True,
                idempotency_key="k1",
            )
        assert duplicate.value.entry.id == "wle_client"
        # A client may now use the system's key shape: it is its own key.
        ledger.post_entry(
            s,
            customer_id="cus_1",
            currency="USD",
            amount=1,
            is_credit=True,
            idempotency_key="payment:pay_1",
        )
    with transaction(settings) as s:
        assert ledger.verify(s).ok
    # The table is still append-only after the migration lifted its guard for a moment.
    with pytest.raises(Exception, match="immutable"), get_engine(settings).begin() as conn:
        conn.execute(text("UPDATE ledger_entries SET reason = 'x'"))
