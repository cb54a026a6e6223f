"""Scopes over HTTP: every route declares one, a key without it gets 403 and nothing changes;
max_credit; actors on what each key posts; the admin audit-log route. SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from webhooks import create_app, scopes
from webhooks.auth import require_api_key
from worker.access import apikeys
from worker.access.scopes import ADMIN, CREDIT, CUSTOMERS, DEBIT, READ, SCOPES
from worker.config import Settings
from worker.models import AuditLog, Customer, LedgerEntry, WalletCharge

BOOTSTRAP = {"Authorization": "Bearer test-key"}

# Routes with an authentication of their own (a provider's signature) or none at all.
EXEMPT_ENDPOINTS = {
    "health.healthz",
    "metrics.metrics",
    "openapi_json",
    "docs_root",
    "static",
    "provider_webhooks.dodo",
    "provider_webhooks.stripe_webhook",
}
EXEMPT_BLUEPRINTS = {"openapi", "swagger"}  # /docs/...: the Swagger UI's files
# Browser pages behind a session cookie or a signed link, not a bearer key; their scopes are
# checked by tests/dashboard/test_dashboard.py.
EXEMPT_BLUEPRINTS |= {"dashboard", "portal"}


def _api_endpoints(app: Flask) -> list[tuple[str, str, str]]:
    """(endpoint, method, rule) of every route behind an API key."""
    found = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint in EXEMPT_ENDPOINTS or rule.endpoint.split(".")[0] in EXEMPT_BLUEPRINTS:
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            found.append((rule.endpoint, method, rule.rule))
    return found


@pytest.fixture
def app(settings: Settings) -> Flask:
    """The app on the test database, bootstrap key ``test-key``."""
    return create_app(settings)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def key(tx) -> Callable[..., dict[str, str]]:
    """``key("read", "credit", max_credit=...)``: headers carrying a new stored key."""

    def make(*granted: str, max_credit: int | None = None) -> dict[str, str]:
        with tx() as s:
            _, secret = apikeys.create_key(s, scopes=granted, max_credit=max_credit)
        return {"Authorization": f"Bearer {secret}"}

    return make


@pytest.fixture
def funded(client: FlaskClient) -> Iterator[str]:
    """A customer holding 10000 USD cents, made with the bootstrap key."""
    r = client.post(
        "/customers", json={"email": "ada@example.com", "name": "Ada"}, headers=BOOTSTRAP
    )
    customer_id = r.json["customer_id"]
    r = client.post(
        f"/customers/{customer_id}/wallets/ledger-entries",
        json={"amount": 10000, "currency": "USD", "entry_type": "credit"},
        headers=BOOTSTRAP,
    )
    assert r.status_code == 200
    yield customer_id


def counts(tx) -> tuple[int, int, int, int]:
    """Customers, entries, charges and audit entries: what a refused request must not change."""
    with tx() as s:
        return tuple(  # type: ignore[return-value]
            s.scalar(select(func.count()).select_from(model))
            for model in (Customer, LedgerEntry, WalletCharge, AuditLog)
        )


def assert_forbidden(response, scope: str) -> None:
    assert response.status_code == 403, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.json
    assert (body["code"], body["required_scope"]) == ("FORBIDDEN", scope)
    assert scope in body["message"]


# -- every route declares its scope ---------------------------------------------------------


def test_every_api_route_declares_a_scope_and_gets_are_read(app: Flask) -> None:
    """A new route without ``@requires`` fails here (and, at run time, answers 403 to every
    key but admin)."""
    routes = _api_endpoints(app)
    assert len(routes) >= 16
    undeclared = [
        (method, rule)
        for endpoint, method, rule in routes
        if scopes.requirement_of(app.view_functions[endpoint]) is None
    ]
    assert undeclared == []
    for endpoint, method, rule in routes:
        declared = scopes.requirement_of(app.view_functions[endpoint])
        assert isinstance(declared, scopes.ByField) or declared in SCOPES, rule
        if method == "GET":
            assert declared == (ADMIN if rule.startswith("/admin/") else READ), rule
        if rule.startswith("/admin/"):
            assert declared == ADMIN, rule


def test_every_api_route_is_behind_the_key_and_the_scope_hook(app: Flask) -> None:
    for endpoint, _method, rule in _api_endpoints(app):
        hooks = app.before_request_funcs.get(endpoint.split(".")[0], [])
        assert require_api_key in hooks and scopes.enforce_scope in hooks, rule
        assert hooks.index(require_api_key) < hooks.index(scopes.enforce_scope), rule


def test_an_undeclared_route_is_admin_only(settings: Settings, key) -> None:
    app = create_app(settings)
    # A view registered without @requires, on an API blueprint (as a forgetful change would).
    app.add_url_rule("/customers-extra", "wallet_api.extra", lambda: {"ok": True})
    client = app.test_client()
    assert_forbidden(client.get("/customers-extra", headers=key(READ, CUSTOMERS)), ADMIN)
    assert client.get("/customers-extra", headers=key(ADMIN)).json == {"ok": True}


# -- each scope's 403, and nothing changed --------------------------------------------------


def _requests(customer_id: str) -> list[tuple[str, str, str, dict | None]]:
    """(scope needed, method, url, body) for one request of every kind."""
    wallets = f"/customers/{customer_id}/wallets"
    return [
        (READ, "get", "/customers", None),
        (READ, "get", f"/customers/{customer_id}", None),
        (READ, "get", wallets, None),
        (READ, "get", f"{wallets}/ledger-entries", None),
        (READ, "get", f"{wallets}/charges/wch_missing", None),
        (READ, "get", "/events", None),
        (READ, "get", "/events/ev_missing", None),
        (CUSTOMERS, "post", "/customers", {"email": "eve@example.com", "name": "Eve"}),
        (CUSTOMERS, "patch", f"/customers/{customer_id}", {"name": "Mallory"}),
        (
            CREDIT,
            "post",
            f"{wallets}/ledger-entries",
            {"amount": 5, "currency": "USD", "entry_type": "credit"},
        ),
        (
            DEBIT,
            "post",
            f"{wallets}/ledger-entries",
            {"amount": 5, "currency": "USD", "entry_type": "debit"},
        ),
        (
            DEBIT,
            "post",
            f"{wallets}/charges",
            {"amount": 5, "currency": "USD", "order_id": "ord_1"},
        ),
        (CREDIT, "post", f"{wallets}/charges/wch_missing/reverse", {}),
        (
            CREDIT,
            "post",
            f"{wallets}/refunds",
            {"amount": 5, "currency": "USD", "payment_id": "pay_1"},
        ),
        (
            DEBIT,
            "post",
            "/events/ingest",
            {"events": [{"event_id": "e1", "customer_id": customer_id, "event_name": "api_call"}]},
        ),
        (ADMIN, "post", "/admin/tasks/check-low-balances", None),
        (ADMIN, "get", "/admin/audit-log", None),
    ]


def test_a_key_without_the_scope_gets_403_naming_it_and_nothing_changes(
    client: FlaskClient, funded: str, key, tx
) -> None:
    before = counts(tx)
    requests = _requests(funded)
    for needed, method, url, body in requests:
        # Every scope but the one needed (and never admin).
        others = [s for s in SCOPES if s not in (needed, ADMIN)]
        headers = key(*others)
        before = counts(tx)
        r = getattr(client, method)(url, json=body, headers=headers)
        assert_forbidden(r, needed)
        assert counts(tx) == before, (method, url)
    with tx() as s:
        customer = s.get(Customer, funded)
        assert customer.name == "Ada" and customer.updated_by is None


def test_a_key_with_the_scope_gets_past_the_check(client: FlaskClient, funded: str, key) -> None:
    for needed, method, url, body in _requests(funded):
        if needed == ADMIN:
            continue  # needs a broker (task) / shown below (audit log)
        r = getattr(client, method)(url, json=body, headers=key(needed))
        assert r.status_code != 403, (method, url, r.json)


def test_admin_implies_every_scope(client: FlaskClient, funded: str, key) -> None:
    admin = key(ADMIN)
    r = client.post(
        f"/customers/{funded}/wallets/ledger-entries",
        json={"amount": 7, "currency": "USD", "entry_type": "debit"},
        headers=admin,
    )
    assert (r.status_code, r.json["balance"]) == (200, 9993)
    assert client.get("/admin/audit-log", headers=admin).status_code == 200


def test_an_unknown_entry_type_is_a_validation_error_not_a_scope(
    client: FlaskClient, funded: str, key
) -> None:
    r = client.post(
        f"/customers/{funded}/wallets/ledger-entries",
        json={"amount": 5, "currency": "USD", "entry_type": "gift"},
        headers=key(READ),
    )
    assert (r.status_code, r.json["field"]) == (422, "entry_type")


# -- max_credit -----------------------------------------------------------------------------


def test_a_credit_above_max_credit_is_refused_naming_the_limit(
    client: FlaskClient, funded: str, key, tx
) -> None:
    limited = key(READ, CREDIT, max_credit=5000)
    wallets = f"/customers/{funded}/wallets"
    before = counts(tx)
    for url, body in (
        (f"{wallets}/ledger-entries", {"amount": 5001, "currency": "USD", "entry_type": "credit"}),
        (f"{wallets}/refunds", {"amount": 5001, "currency": "INR", "payment_id": "pay_9"}),
    ):
        r = client.post(url, json=body, headers=limited)
        assert r.status_code == 403, r.json
        assert (r.json["code"], r.json["limit"], r.json["max_credit"]) == (
            "CREDIT_LIMIT_EXCEEDED",
            "max_credit",
            5000,
        )
        assert r.json["requested_amount"] == 5001 and "max_credit" in r.json["message"]
    assert counts(tx) == before
    ok = client.post(
        f"{wallets}/ledger-entries",
        json={"amount": 5000, "currency": "USD", "entry_type": "credit"},
        headers=limited,
    )
    assert (ok.status_code, ok.json["balance"]) == (200, 15000)


# -- actors ---------------------------------------------------------------------------------


def test_entries_charges_and_customers_record_the_key_that_made_them(
    client: FlaskClient, key, tx
) -> None:
    headers = key(READ, CUSTOMERS, CREDIT, DEBIT)
    with tx() as s:
        [key_id] = [k.id for k in apikeys.list_keys(s)]
    customer_id = client.post(
        "/customers", json={"email": "bob@example.com", "name": "Bob"}, headers=headers
    ).json["customer_id"]
    wallets = f"/customers/{customer_id}/wallets"
    client.post(
        f"{wallets}/ledger-entries",
        json={"amount": 300, "currency": "USD", "entry_type": "credit"},
        headers=headers,
    )
    # 400 asked, 300 from the wallet: the card paid 100, which a refund may give back.
    charge = client.post(
        f"{wallets}/charges",
        json={"amount": 400, "currency": "USD", "order_id": "o1"},
        headers=headers,
    ).json
    client.post(f"{wallets}/charges/{charge['charge_id']}/reverse", json={}, headers=headers)
    refund = client.post(
        f"{wallets}/refunds",
        json={"amount": 50, "currency": "USD", "payment_id": charge["charge_id"]},
        headers=headers,
    )
    assert refund.status_code == 200, refund.json
    client.patch(f"/customers/{customer_id}", json={"name": "Robert"}, headers=BOOTSTRAP)
    listed = client.get(f"{wallets}/ledger-entries", headers=headers).json["items"]
    assert [(e["event_type"], e["actor"]) for e in listed] == [
        ("refund", key_id),
        ("payment_reversal", key_id),
        ("payment", key_id),
        ("merchant_adjustment", key_id),
    ]
    with tx() as s:
        customer = s.get(Customer, customer_id)
        assert (customer.created_by, customer.updated_by) == (key_id, "bootstrap")
        assert customer.updated_at is not None
        assert s.scalar(select(WalletCharge.actor)) == key_id
        [changed] = s.scalars(select(AuditLog).where(AuditLog.action == "customer.updated"))
        assert (changed.actor, changed.target, changed.details) == (
            "bootstrap",
            customer_id,
            {"fields": ["name"]},
        )


# -- the audit log over HTTP ----------------------------------------------------------------


def test_admin_audit_log_lists_newest_first_and_pages(client: FlaskClient, tx) -> None:
    with tx() as s:
        first, _ = apikeys.create_key(s, name="a", actor="cli")
        second, _ = apikeys.create_key(s, name="b", scopes=[READ, DEBIT], actor="cli")
    with tx() as s:
        apikeys.revoke_key(s, first.id, actor="cli")
    r = client.get("/admin/audit-log?page_size=2", headers=BOOTSTRAP)
    assert r.status_code == 200
    assert [(e["action"], e["target"], e["actor"]) for e in r.json["items"]] == [
        ("apikey.revoked", first.id, "cli"),
        ("apikey.created", second.id, "cli"),
    ]
    assert r.json["items"][1]["details"] == {
        "name": "b",
        "scopes": ["read", "debit"],
        "max_credit": None,
    }
    page = client.get("/admin/audit-log?page_size=2&page_number=1", headers=BOOTSTRAP).json
    assert [e["target"] for e in page["items"]] == [first.id]
    only = client.get("/admin/audit-log?action=apikey.revoked", headers=BOOTSTRAP).json
    assert [e["target"] for e in only["items"]] == [first.id]
