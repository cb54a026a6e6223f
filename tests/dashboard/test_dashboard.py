"""The dashboard over Flask's test client, on SQLite and PostgreSQL: sign-in and the session
cookie, CSRF, scopes (a form the key may not use is absent, and forging it is 403), the
credit/debit form through the posting pipeline, keyset paging, the CSV export, operations
and their audit entries."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from datetime import timedelta

import pytest
from flask import Flask
from sqlalchemy import func, select

from tests.support.dashboard import TOKEN, sign_in
from webhooks import create_app, scopes
from worker import inbox, ledger
from worker.access import apikeys
from worker.access.scopes import ADMIN, CREDIT, DEBIT, READ, SCOPES
from worker.config import Settings
from worker.infra import celery_app
from worker.ledger import dashboard_views
from worker.models import AuditLog, InboxEvent, LedgerEntry, OutboxMessage, utcnow

BOOTSTRAP = {"Authorization": "Bearer test-key"}


@pytest.fixture
def app(settings: Settings) -> Flask:
    return create_app(settings)


@pytest.fixture
def new_key(tx) -> Callable[..., tuple[str, str]]:
    """``new_key("read", ...)``: (key id, secret) of a new stored key."""

    def make(*granted: str, max_credit: int | None = None) -> tuple[str, str]:
        with tx() as s:
            key, secret = apikeys.create_key(s, scopes=granted, max_credit=max_credit)
            return key.id, secret

    return make


@pytest.fixture
def customer_id(tx) -> str:
    with tx() as s:
        customer, _ = ledger.create_customer(s, email="ada@example.com", name="Ada Lovelace")
        return customer.customer_id


def entries(tx, customer_id: str) -> list[LedgerEntry]:
    with tx() as s:
        return list(
            s.scalars(
                select(LedgerEntry)
                .where(LedgerEntry.customer_id == customer_id)
                .order_by(LedgerEntry.seq)
            )
        )


def credit_form(token: str, **overrides: str) -> dict[str, str]:
    form = {
        "csrf_token": token,
        "entry_type": "credit",
        "amount": "12.50",
        "currency": "USD",
        "reason": "Welcome bonus",
        "idempotency_key": "dash-1",
    }
    form.update(overrides)
    return form


# -- routes and sign-in ------------------------------------------------------------------------


def test_every_dashboard_route_declares_a_scope(app: Flask) -> None:
    open_endpoints = {"dashboard.sign_in", "dashboard.sign_in_post", "dashboard.static"}
    found = 0
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("dashboard.") or rule.endpoint in open_endpoints:
            continue
        found += 1
        declared = scopes.requirement_of(app.view_functions[rule.endpoint])
        assert isinstance(declared, scopes.ByField) or declared in SCOPES, rule.rule
        if "/operations" in rule.rule:
            assert declared == ADMIN, rule.rule
        elif "GET" in rule.methods:
            assert declared == READ, rule.rule
    assert found >= 10


def test_pages_need_a_session_and_send_you_to_sign_in(app: Flask) -> None:
    client = app.test_client()
    r = client.get("/dashboard/customers?q=ada")
    assert r.status_code == 303
    assert r.headers["Location"].startswith("/dashboard/sign-in?next=")
    r = client.post("/dashboard/customers/cus_x/entries", data={"amount": "1"})
    assert r.status_code == 303 and "/dashboard/sign-in" in r.headers["Location"]


def test_sign_in_sets_an_httponly_strict_cookie_and_sign_out_drops_it(app: Flask) -> None:
    client = app.test_client()
    form = client.get("/dashboard/sign-in")
    token = TOKEN.search(form.text).group(1)
    r = client.post(
        "/dashboard/sign-in",
        data={"csrf_token": token, "api_key": "test-key", "next": "/dashboard/customers"},
    )
    assert (r.status_code, r.headers["Location"]) == (303, "/dashboard/customers")
    cookie = next(c for c in r.headers.getlist("Set-Cookie") if c.startswith("bw_session="))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/dashboard" in cookie
    assert "Secure" not in cookie  # plain HTTP here
    assert "test-key" not in cookie  # the key's fingerprint, never the key
    csrf = TOKEN.search(client.get("/dashboard").text).group(1)
    r = client.post("/dashboard/sign-out", data={"csrf_token": csrf})
    assert r.status_code == 303
    assert client.get("/dashboard").status_code == 303


def test_the_cookie_is_secure_over_https(app: Flask) -> None:
    client = app.test_client()
    form = client.get("/dashboard/sign-in", base_url="https://localhost")
    token = TOKEN.search(form.text).group(1)
    r = client.post(
        "/dashboard/sign-in",
        data={"csrf_token": token, "api_key": "test-key"},
        base_url="https://localhost",
    )
    cookie = next(c for c in r.headers.getlist("Set-Cookie") if c.startswith("bw_session="))
    assert "Secure" in cookie


def test_a_wrong_key_is_refused_and_next_never_leaves_the_dashboard(app: Flask) -> None:
    client = app.test_client()
    token = TOKEN.search(client.get("/dashboard/sign-in").text).group(1)
    r = client.post("/dashboard/sign-in", data={"csrf_token": token, "api_key": "nope"})
    assert r.status_code == 401 and "not valid" in r.text
    token = TOKEN.search(r.text).group(1)
    r = client.post(
        "/dashboard/sign-in",
        data={"csrf_token": token, "api_key": "test-key", "next": "https://evil.example/x"},
    )
    assert r.headers["Location"] == "/dashboard"


def test_sign_in_without_its_csrf_token_is_refused(app: Flask) -> None:
    client = app.test_client()
    client.get("/dashboard/sign-in")
    r = client.post("/dashboard/sign-in", data={"csrf_token": "forged", "api_key": "test-key"})
    assert r.status_code == 403 and "CSRF" in r.text


def test_a_revoked_key_ends_its_sessions(app: Flask, tx, new_key) -> None:
    key_id, secret = new_key(READ)
    client = app.test_client()
    sign_in(client, secret)
    with tx() as s:
        apikeys.revoke_key(s, key_id)
    assert client.get("/dashboard").status_code == 303


def test_a_tampered_cookie_is_no_session(app: Flask) -> None:
    client = app.test_client()
    sign_in(client)
    value = client.get_cookie("bw_session", path="/dashboard").value
    client.set_cookie("bw_session", value[:-3] + "AAA", path="/dashboard")
    assert client.get("/dashboard").status_code == 303


# -- the credit/debit form ---------------------------------------------------------------------


def test_credit_form_posts_one_entry_with_the_key_as_actor(
    app: Flask, tx, new_key, customer_id: str
) -> None:
    key_id, secret = new_key(READ, CREDIT)
    client = app.test_client()
    token = sign_in(client, secret)
    r = client.post(f"/dashboard/customers/{customer_id}/entries", data=credit_form(token))
    assert r.status_code == 303, r.text
    page = client.get(r.headers["Location"])
    assert "Credited 12.50 USD" in page.text and 'data-balance="1250"' in page.text
    [entry] = entries(tx, customer_id)
    assert (entry.amount, entry.is_credit, entry.actor, entry.reason) == (
        1250,
        True,
        key_id,
        "Welcome bonus",
    )
    # The same form again (a double click, a reload): the key makes it one entry.
    again = client.post(f"/dashboard/customers/{customer_id}/entries", data=credit_form(token))
    assert again.status_code == 409 and "Already posted" in again.text
    assert len(entries(tx, customer_id)) == 1


def test_a_read_key_sees_no_form_and_a_forged_post_is_403(
    app: Flask, tx, new_key, customer_id: str
) -> None:
    _, secret = new_key(READ)
    client = app.test_client()
    token = sign_in(client, secret)
    page = client.get(f"/dashboard/customers/{customer_id}")
    assert page.status_code == 200 and "Post entry" not in page.text
    assert "Operations" not in page.text
    r = client.post(f"/dashboard/customers/{customer_id}/entries", data=credit_form(token))
    assert r.status_code == 403 and "credit" in r.text
    assert entries(tx, customer_id) == []
    assert client.get("/dashboard/operations").status_code == 403


def test_a_debit_key_cannot_credit_and_max_credit_holds(
    app: Flask, tx, new_key, customer_id: str
) -> None:
    _, debit = new_key(READ, DEBIT)
    client = app.test_client()
    token = sign_in(client, debit)
    page = client.get(f"/dashboard/customers/{customer_id}")
    assert 'value="debit"' in page.text and 'value="credit"' not in page.text
    r = client.post(f"/dashboard/customers/{customer_id}/entries", data=credit_form(token))
    assert r.status_code == 403
    _, capped = new_key(READ, CREDIT, max_credit=1000)
    client = app.test_client()
    token = sign_in(client, capped)
    r = client.post(f"/dashboard/customers/{customer_id}/entries", data=credit_form(token))
    assert r.status_code == 403 and "1000" in r.text
    assert entries(tx, customer_id) == []


def test_a_post_without_the_csrf_token_changes_nothing(app: Flask, tx, customer_id: str) -> None:
    client = app.test_client()
    sign_in(client)
    for token in ("", "wrong"):
        r = client.post(f"/dashboard/customers/{customer_id}/entries", data=credit_form(token))
        assert r.status_code == 403 and "CSRF" in r.text
    assert entries(tx, customer_id) == []


@pytest.mark.parametrize(
    ("amount", "field"),
    [("12.345", "USD has 2 decimal places"), ("abc", "must be a number"), ("0", "amount")],
)
def test_an_amount_is_exact_or_refused_naming_it(
    app: Flask, tx, customer_id: str, amount: str, field: str
) -> None:
    client = app.test_client()
    token = sign_in(client)
    r = client.post(
        f"/dashboard/customers/{customer_id}/entries", data=credit_form(token, amount=amount)
    )
    assert r.status_code == 422 and field in r.text
    assert f'value="{amount}"' in r.text  # the form keeps what was typed
    assert entries(tx, customer_id) == []


def test_a_debit_beyond_the_balance_is_refused_on_the_page(
    app: Flask, tx, customer_id: str
) -> None:
    client = app.test_client()
    token = sign_in(client)
    client.post(f"/dashboard/customers/{customer_id}/entries", data=credit_form(token))
    r = client.post(
        f"/dashboard/customers/{customer_id}/entries",
        data=credit_form(token, entry_type="debit", amount="20", idempotency_key="d-1"),
    )
    assert r.status_code == 400 and "balance" in r.text.lower()
    assert [e.amount for e in entries(tx, customer_id)] == [1250]


def test_a_credit_with_an_expiry_and_category_makes_that_lot(
    app: Flask, tx, customer_id: str
) -> None:
    client = app.test_client()
    token = sign_in(client)
    form = credit_form(token, category="promotional", expires_on="2099-01-31")
    assert client.post(f"/dashboard/customers/{customer_id}/entries", data=form).status_code == 303
    page = client.get(f"/dashboard/customers/{customer_id}")
    assert "promotional" in page.text and "2099-01-31 00:00:00 UTC" in page.text


# -- reading ------------------------------------------------------------------------------------


def test_customers_search_pages_by_keyset(app: Flask, tx) -> None:
    with tx() as s:
        for i in range(55):
            ledger.create_customer(s, email=f"c{i:02d}@example.com", name=f"Customer {i:02d}")
        ledger.create_customer(s, email="zed@other.test", name="Zed")
    client = app.test_client()
    sign_in(client)
    first = client.get("/dashboard/customers?q=EXAMPLE.com")
    assert first.text.count("@example.com</td>") == 50 and "zed@" not in first.text
    after = re.search(r'href="(/dashboard/customers\?[^"]*after=[^"]+)" rel="next"', first.text)
    second = client.get(after.group(1).replace("&amp;", "&"))
    assert second.text.count("@example.com</td>") == 5
    assert 'rel="next"' not in second.text
    assert "Zed" in client.get("/dashboard/customers?q=zed").text


def test_ledger_filters_and_pages_and_csv_export(app: Flask, tx, customer_id: str) -> None:
    for i in range(60):
        ledger.post_own(
            app.config["SETTINGS"],
            ledger.Leg(
                customer_id=customer_id,
                currency="USD",
                amount=100 + i,
                is_credit=True,
                reason="=HYPERLINK(1)" if i == 0 else f"credit {i}",
                key=ledger.client_key(f"k{i}"),
                actor="test",
            ),
        )
    client = app.test_client()
    sign_in(client)
    page = client.get(f"/dashboard/customers/{customer_id}?currency=USD")
    assert page.text.count('<tr id="entry-') == 50
    older = re.search(r'href="([^"]*before=\d+[^"]*)" rel="next"', page.text).group(1)
    second = client.get(older.replace("&amp;", "&"))
    assert second.text.count('<tr id="entry-') == 10
    assert "credit 9<" in second.text and "credit 10<" not in second.text
    assert (
        "No entries match"
        in client.get(f"/dashboard/customers/{customer_id}?event_type=usage").text
    )
    bad = client.get(f"/dashboard/customers/{customer_id}?since=yesterday")
    assert bad.status_code == 422 and "since" in bad.text

    export = client.get(f"/dashboard/customers/{customer_id}/ledger.csv")
    assert export.status_code == 200 and export.mimetype == "text/csv"
    rows = list(csv.reader(io.StringIO(export.get_data(as_text=True))))
    assert rows[0][:6] == ["id", "created_at", "currency", "entry_type", "event_type", "amount"]
    assert len(rows) == 61
    assert [int(r[5]) for r in rows[1:4]] == [159, 158, 157]
    assert rows[-1][8] == "'=HYPERLINK(1)"  # never a formula in a spreadsheet


def test_overview_shows_liability_flows_and_expiring_credit(
    app: Flask, tx, customer_id: str
) -> None:
    client = app.test_client()
    token = sign_in(client)
    client.post(
        f"/dashboard/customers/{customer_id}/entries",
        data=credit_form(token, amount="1234.56"),
    )
    overview = client.get("/dashboard")
    assert "1,234.56 USD" in overview.text
    assert '<svg class="chart"' in overview.text
    assert "No credit expires this week" in overview.text
    headers = overview.headers
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert headers["Cache-Control"] == "no-store"


# -- operations --------------------------------------------------------------------------------


def test_replay_from_operations_is_audited_with_the_key(app: Flask, tx, new_key) -> None:
    with tx() as s:
        event_id = inbox.record_event(
            s,
            provider="dodo",
            provider_event_id="msg_1",
            event_type="payment.succeeded",
            payload={"type": "payment.succeeded", "data": "oops"},
        )
    with tx() as s:
        inbox.process_event(s, event_id)
    key_id, secret = new_key(ADMIN)
    client = app.test_client()
    token = sign_in(client, secret)
    page = client.get("/dashboard/operations?inbox_status=failed")
    assert f"Replay event {event_id}" in page.text
    r = client.post(f"/dashboard/operations/inbox/{event_id}/replay", data={"csrf_token": token})
    assert r.status_code == 303
    assert "replayed: now failed" in client.get(r.headers["Location"]).text
    with tx() as s:
        assert s.get(InboxEvent, event_id).attempts == 2
        audit = s.scalars(select(AuditLog).where(AuditLog.action == "inbox.replayed")).one()
    assert (audit.actor, audit.target, audit.details["via"]) == (key_id, str(event_id), "dashboard")


def test_operations_refuse_a_forged_replay_without_admin(app: Flask, tx, new_key) -> None:
    _, secret = new_key(READ, CREDIT, DEBIT)
    client = app.test_client()
    token = sign_in(client, secret)
    r = client.post("/dashboard/operations/inbox/1/replay", data={"csrf_token": token})
    assert r.status_code == 403 and "admin" in r.text
    with tx() as s:
        assert s.scalar(select(func.count()).select_from(AuditLog)) == 1  # the key's creation


def test_daily_flows_remember_closed_days_only(settings: Settings, tx, customer_id: str) -> None:
    def post(amount: int, is_credit: bool, key: str) -> None:
        ledger.post_own(
            settings,
            ledger.Leg(
                customer_id=customer_id,
                currency="USD",
                amount=amount,
                is_credit=is_credit,
                key=ledger.client_key(key),
                actor="test",
            ),
        )

    post(700, True, "a")
    post(200, False, "b")
    now = utcnow()
    with tx() as s:
        [today] = dashboard_views.daily_flows(s, now=now)
        assert (today.day, today.credits, today.debits) == (now.date(), 700, 200)
        [spent] = dashboard_views.daily_spending(s, customer_id, now=now)
        assert (spent.credits, spent.debits) == (0, 200)
    later = now + timedelta(days=1, hours=2)  # today is then a closed day, read once
    with tx() as s:
        assert [f.credits for f in dashboard_views.daily_flows(s, now=later)] == [700]
    post(50, True, "c")
    with tx() as s:
        assert [f.credits for f in dashboard_views.daily_flows(s, now=now)] == [750]
        assert [f.credits for f in dashboard_views.daily_flows(s, now=later)] == [700]


def test_guessing_keys_at_the_sign_in_form_meets_the_throttle(settings: Settings) -> None:
    client = create_app(settings.with_overrides(auth_failure_limit=2)).test_client()
    statuses = []
    for _ in range(3):
        token = TOKEN.search(client.get("/dashboard/sign-in").text).group(1)
        r = client.post("/dashboard/sign-in", data={"csrf_token": token, "api_key": "guess"})
        statuses.append(r.status_code)
    assert statuses == [401, 401, 429]


def test_run_now_enqueues_the_task_and_audits_it(app: Flask, tx, redis_url, monkeypatch) -> None:
    celery = celery_app.make_celery(Settings(broker_url=redis_url))
    monkeypatch.setattr(celery_app, "_app", celery)
    client = app.test_client()
    token = sign_in(client)
    r = client.post(
        "/dashboard/operations/tasks/check-low-balances/run", data={"csrf_token": token}
    )
    assert r.status_code == 303
    assert "Task check-low-balances enqueued" in client.get(r.headers["Location"]).text
    with tx() as s:
        entry = s.scalars(select(AuditLog).where(AuditLog.action == "task.triggered")).one()
    assert (entry.actor, entry.target, entry.details["via"]) == (
        "bootstrap",
        "check-low-balances",
        "dashboard",
    )
    celery.close()


def test_run_now_with_the_broker_down_is_503_and_audits_nothing(
    app: Flask, tx, monkeypatch
) -> None:
    celery = celery_app.make_celery(Settings(broker_url="redis://127.0.0.1:9/0"))
    monkeypatch.setattr(celery_app, "_app", celery)
    client = app.test_client()
    token = sign_in(client)
    r = client.post(
        "/dashboard/operations/tasks/check-low-balances/run", data={"csrf_token": token}
    )
    assert r.status_code == 503
    unknown = client.post("/dashboard/operations/tasks/nope/run", data={"csrf_token": token})
    assert unknown.status_code == 404
    with tx() as s:
        assert s.scalar(select(func.count()).select_from(AuditLog)) == 0
    celery.close()


def test_resend_queues_the_notification_again_tries_it_and_audits(app: Flask, tx) -> None:
    with tx() as s:
        s.add(
            OutboxMessage(
                id="msg_dash_1",
                endpoint_id=None,
                channel="webhook",
                event_type="wallet.balance_low",
                payload={"type": "wallet.balance_low", "data": {}},
                status="failed",
                attempts=7,
                last_error="HTTP 500",
            )
        )
    client = app.test_client()
    token = sign_in(client)
    page = client.get("/dashboard/operations?notification_status=failed")
    assert "Resend notification msg_dash_1" in page.text
    r = client.post(
        "/dashboard/operations/notifications/msg_dash_1/resend", data={"csrf_token": token}
    )
    assert r.status_code == 303
    # No NOTIFY_WEBHOOK_URL here: tried at once, and failed for good, saying why.
    assert "Notification msg_dash_1 resent: failed" in client.get(r.headers["Location"]).text
    with tx() as s:
        message = s.get(OutboxMessage, "msg_dash_1")
        assert (message.status, message.attempts) == ("failed", 1)
        assert "NOTIFY_WEBHOOK_URL" in message.last_error
        entry = s.scalars(select(AuditLog).where(AuditLog.action == "notification.resent")).one()
    assert (entry.actor, entry.target) == ("bootstrap", "msg_dash_1")
