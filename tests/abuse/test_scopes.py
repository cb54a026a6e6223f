"""An attacker holding one ordinary API key, against the real server (gunicorn on PostgreSQL,
a real Redis broker): each scope it lacks is a 403 naming the scope and changes nothing, a
goodwill credit above its max_credit is refused, every entry names the key that posted it,
and key creation, revocation and task triggers are in the audit log."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from tests.support.cli import run_cli_process
from tests.support.processes import create_pg_database, drop_pg_database, gunicorn, process_env
from worker.config import Settings
from worker.infra import migrate
from worker.infra.db import get_engine

pytestmark = pytest.mark.slow

BOOTSTRAP_KEY = "abuse-bootstrap-key-0123456789abcdef"
NON_ADMIN = ("read", "customers", "debit", "credit")


@dataclass
class Server:
    base: str
    database_url: str

    def call(self, method: str, path: str, key: str, body: dict | None = None) -> httpx.Response:
        return httpx.request(
            method,
            self.base + path,
            json=body,
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        )

    def cli(self, *args: str) -> str:
        """``python -m worker *args`` as a real process; its stdout (fails on a non-zero exit)."""
        run = run_cli_process(self.database_url, *args)
        assert run.returncode == 0, run.stderr
        return run.stdout

    def new_key(self, *scopes: str, max_credit: int | None = None) -> dict:
        args = [arg for scope in scopes for arg in ("--scope", scope)]
        if max_credit is not None:
            args += ["--max-credit", str(max_credit)]
        return json.loads(self.cli("apikeys", "create", "--name", "abuse", *args, "--json"))

    def snapshot(self) -> dict[str, object]:
        """Everything a refused request must leave as it was."""
        with get_engine(Settings(database_url=self.database_url)).connect() as conn:
            return {
                table: conn.execute(text(f"SELECT count(*) FROM {table}")).scalar()
                for table in ("customers", "ledger_entries", "wallet_charges", "usage_events")
            } | {
                "balances": conn.execute(
                    text("SELECT customer_id, currency, balance FROM wallets ORDER BY 1, 2")
                ).all(),
                "names": conn.execute(text("SELECT name FROM customers ORDER BY 1")).all(),
            }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Server]:
    """gunicorn on a fresh, migrated PostgreSQL database, sending tasks to a real Redis."""
    name, url = create_pg_database("bw_abuse_scopes")
    settings = Settings(database_url=url)
    migrate.upgrade(settings)
    get_engine(settings).dispose()
    env = process_env(DATABASE_URL=url, BILLING_API_KEY=BOOTSTRAP_KEY, CELERY_BROKER_URL=redis_url)
    tmp: Path = tmp_path_factory.mktemp("abuse-scopes")
    try:
        with gunicorn(env, tmp, workers=2) as base:
            yield Server(base, url)
    finally:
        get_engine(settings).dispose()
        drop_pg_database(name)


@pytest.fixture(scope="module")
def victim(server: Server) -> str:
    """A customer holding 10000 USD cents."""
    r = server.call("POST", "/customers", BOOTSTRAP_KEY, {"email": "v@example.com", "name": "V"})
    customer_id = r.json()["customer_id"]
    r = server.call(
        "POST",
        f"/customers/{customer_id}/wallets/ledger-entries",
        BOOTSTRAP_KEY,
        {"amount": 10000, "currency": "USD", "entry_type": "credit"},
    )
    assert r.status_code == 200
    return customer_id


def attempts(customer_id: str) -> list[tuple[str, str, str, dict | None]]:
    """(scope needed, method, path, body): one of each thing an attacker would try."""
    wallets = f"/customers/{customer_id}/wallets"
    usd = {"currency": "USD"}
    huge = {**usd, "amount": 10**15}
    whole = {**usd, "amount": 10000}
    event = {"event_id": "e", "customer_id": customer_id, "event_name": "api_call"}
    return [
        ("read", "GET", "/customers", None),
        ("read", "GET", f"{wallets}/ledger-entries", None),
        ("read", "GET", "/events", None),
        ("customers", "POST", "/customers", {"email": "x@example.com", "name": "X"}),
        ("customers", "PATCH", f"/customers/{customer_id}", {"name": "owned"}),
        ("credit", "POST", f"{wallets}/ledger-entries", {**huge, "entry_type": "credit"}),
        ("credit", "POST", f"{wallets}/refunds", {**huge, "payment_id": "pay_x"}),
        ("credit", "POST", f"{wallets}/charges/wch_x/reverse", {}),
        ("debit", "POST", f"{wallets}/ledger-entries", {**whole, "entry_type": "debit"}),
        ("debit", "POST", f"{wallets}/charges", {**whole, "order_id": "o"}),
        ("debit", "POST", "/events/ingest", {"events": [event]}),
        ("admin", "POST", "/admin/tasks/check-low-balances", None),
        ("admin", "GET", "/admin/audit-log", None),
    ]


def test_each_missing_scope_is_a_403_naming_it_and_nothing_changes(
    server: Server, victim: str
) -> None:
    keys = {
        scope: server.new_key(*[s for s in NON_ADMIN if s != scope])["key"]
        for scope in (*NON_ADMIN, "admin")
    }
    before = server.snapshot()
    for needed, method, path, body in attempts(victim):
        r = server.call(method, path, keys[needed], body)
        assert r.status_code == 403, (method, path, r.text)
        assert r.headers["content-type"] == "application/json"
        assert (r.json()["code"], r.json()["required_scope"]) == ("FORBIDDEN", needed), path
        assert server.snapshot() == before, (method, path)


def test_a_credit_above_max_credit_is_refused_naming_the_limit(server: Server, victim: str) -> None:
    key = server.new_key("credit", max_credit=5000)["key"]
    path = f"/customers/{victim}/wallets/ledger-entries"
    before = server.snapshot()
    r = server.call(
        "POST", path, key, {"amount": 10**15, "currency": "USD", "entry_type": "credit"}
    )
    assert r.status_code == 403
    assert (r.json()["code"], r.json()["limit"], r.json()["max_credit"]) == (
        "CREDIT_LIMIT_EXCEEDED",
        "max_credit",
        5000,
    )
    assert server.snapshot() == before
    r = server.call("POST", path, key, {"amount": 5000, "currency": "USD", "entry_type": "credit"})
    assert r.status_code == 200


def test_every_entry_names_the_key_that_posted_it(server: Server) -> None:
    created = server.new_key(*NON_ADMIN)
    key, key_id = created["key"], created["id"]
    customer_id = server.call(
        "POST", "/customers", key, {"email": "who@example.com", "name": "Who"}
    ).json()["customer_id"]
    path = f"/customers/{customer_id}/wallets/ledger-entries"
    server.call("POST", path, key, {"amount": 700, "currency": "USD", "entry_type": "credit"})
    server.call(
        "POST", path, BOOTSTRAP_KEY, {"amount": 200, "currency": "USD", "entry_type": "debit"}
    )
    server.cli("wallet", "credit", customer_id, "5", "--currency", "USD")
    items = server.call("GET", path, key).json()["items"]
    assert [(e["amount"], e["actor"]) for e in items] == [
        (5, "cli"),
        (200, "bootstrap"),
        (700, key_id),
    ]
    listed = server.cli("ledger", "list", customer_id).splitlines()
    assert [line.split(" by ")[1].split()[0] for line in listed] == ["cli", "bootstrap", key_id]


def test_key_creation_revocation_and_task_triggers_are_audited(server: Server) -> None:
    admin = server.new_key("admin")
    ordinary = server.new_key("read")
    server.cli("apikeys", "revoke", ordinary["id"])
    r = server.call("POST", "/admin/tasks/check-low-balances", admin["key"])
    assert r.status_code == 202, r.text
    task_id = r.json()["task_id"]

    logged = json.loads(server.cli("audit", "list", "--limit", "4", "--json"))["items"]
    assert [(e["action"], e["actor"], e["target"]) for e in logged] == [
        ("task.triggered", admin["id"], "check-low-balances"),
        ("apikey.revoked", "cli", ordinary["id"]),
        ("apikey.created", "cli", ordinary["id"]),
        ("apikey.created", "cli", admin["id"]),
    ]
    assert logged[0]["details"] == {"task_id": task_id, "via": "http"}
    assert logged[2]["details"]["scopes"] == ["read"]
    over_http = server.call("GET", "/admin/audit-log?page_size=4", admin["key"]).json()["items"]
    assert over_http == logged
