"""Customer portal links and the signing key, on SQLite and PostgreSQL: a link opens its own
customer's read-only page and nothing else; tampered, foreign and expired links are 401; the
generated key is one per database, SECRET_KEY overrides it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from flask import Flask
from sqlalchemy import select

from tests.support.dashboard import sign_in
from webhooks import create_app
from worker import ledger
from worker.access import apikeys, portal, signing
from worker.access.scopes import READ
from worker.config import ConfigError, Settings
from worker.models import AppSecret, AuditLog, utcnow

BOOTSTRAP = {"Authorization": "Bearer test-key"}


@pytest.fixture
def app(settings: Settings) -> Flask:
    return create_app(settings)


@pytest.fixture
def two_customers(tx, settings: Settings) -> tuple[str, str]:
    """Ada with 25.00 USD, Bob with 7.00 USD."""
    ids = []
    with tx() as s:
        for email, name in (("ada@example.com", "Ada"), ("bob@example.com", "Bob")):
            customer, _ = ledger.create_customer(s, email=email, name=name)
            ids.append(customer.customer_id)
    for customer_id, amount in zip(ids, (2500, 700), strict=True):
        ledger.post_own(
            settings,
            ledger.Leg(
                customer_id=customer_id,
                currency="USD",
                amount=amount,
                is_credit=True,
                reason="internal note: goodwill",
                key=ledger.client_key("welcome"),
                actor="test",
            ),
        )
    return ids[0], ids[1]


def test_a_read_key_creates_a_link_valid_portal_session_seconds(
    settings: Settings, tx, two_customers
) -> None:
    ada, _ = two_customers
    app = create_app(settings.with_overrides(portal_session_seconds=600))
    with tx() as s:
        key, secret = apikeys.create_key(s, scopes=[READ])
        key_id = key.id
    before = utcnow()
    r = app.test_client().post(
        f"/customers/{ada}/portal-sessions", headers={"Authorization": f"Bearer {secret}"}
    )
    assert r.status_code == 200, r.json
    expires_at = datetime.fromisoformat(r.json["expires_at"].replace("Z", "+00:00"))
    assert timedelta(seconds=599) <= expires_at - before <= timedelta(seconds=601)
    url = urlsplit(r.json["url"])
    assert url.path.startswith(f"/portal/{ada}/")
    with tx() as s:
        entry = s.scalars(select(AuditLog).where(AuditLog.action == "portal.link_created")).one()
    assert (entry.actor, entry.target, entry.details["via"]) == (key_id, ada, "http")


def test_the_portal_shows_that_customer_read_only(app: Flask, two_customers) -> None:
    ada, _ = two_customers
    client = app.test_client()
    url = client.post(f"/customers/{ada}/portal-sessions", headers=BOOTSTRAP).json["url"]
    page = client.get(urlsplit(url).path)
    assert page.status_code == 200
    assert "Hello, Ada" in page.text and "25.00 USD" in page.text
    assert "Bob" not in page.text and "7.00 USD" not in page.text
    assert "<form" not in page.text
    assert "internal note" not in page.text  # operators' reasons stay in the dashboard
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert page.headers["Cache-Control"] == "no-store"


def test_another_customers_id_in_the_link_is_refused(app: Flask, two_customers) -> None:
    ada, bob = two_customers
    client = app.test_client()
    url = client.post(f"/customers/{ada}/portal-sessions", headers=BOOTSTRAP).json["url"]
    token = urlsplit(url).path.rsplit("/", 1)[1]
    r = client.get(f"/portal/{bob}/{token}")
    assert r.status_code == 401 and "not valid" in r.text
    assert "Bob" not in r.text and r.mimetype == "text/html"


@pytest.mark.parametrize(
    "edit",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # the signature
        lambda t: str(int(t.split(".")[0]) + 3600) + "." + t.split(".")[1],  # a later expiry
        lambda t: "x" + t,
        lambda t: "",
    ],
)
def test_a_tampered_link_is_401(app: Flask, two_customers, edit) -> None:
    ada, _ = two_customers
    client = app.test_client()
    url = client.post(f"/customers/{ada}/portal-sessions", headers=BOOTSTRAP).json["url"]
    token = urlsplit(url).path.rsplit("/", 1)[1]
    r = client.get(f"/portal/{ada}/{edit(token)}")
    assert r.status_code in (401, 404)  # an empty token matches no route
    if r.status_code == 401:
        assert "25.00" not in r.text


def test_an_expired_link_is_401(app: Flask, settings: Settings, two_customers) -> None:
    ada, _ = two_customers
    link = portal.link_until(settings, ada, datetime.now(UTC) - timedelta(seconds=1))
    r = app.test_client().get(link.path)
    assert r.status_code == 401 and "expired" in r.text


def test_a_tilde_in_an_id_cannot_borrow_another_customers_link(settings: Settings) -> None:
    link = portal.link_until(settings, "a~b", datetime.now(UTC) + timedelta(hours=1))
    with pytest.raises(portal.PortalLinkInvalid):
        portal.verify(settings, "a", "b~" + link.token)
    assert portal.verify(settings, "a~b", link.token).customer_id == "a~b"


def test_an_unknown_customer_gets_no_link(app: Flask) -> None:
    r = app.test_client().post("/customers/cus_missing/portal-sessions", headers=BOOTSTRAP)
    assert r.status_code == 404


def test_a_link_from_the_dashboard_is_audited(app: Flask, tx, two_customers) -> None:
    ada, _ = two_customers
    client = app.test_client()
    csrf = sign_in(client)
    r = client.post(f"/dashboard/customers/{ada}/portal-link", data={"csrf_token": csrf})
    assert r.status_code == 200 and f"/portal/{ada}/" in r.text
    with tx() as s:
        entry = s.scalars(select(AuditLog).where(AuditLog.action == "portal.link_created")).one()
    assert (entry.actor, entry.target) == ("bootstrap", ada)


# -- the signing key ---------------------------------------------------------------------------


def test_the_generated_key_is_stored_once_and_shared(settings: Settings, tx) -> None:
    first = signing.secret_key(settings)
    signing.forget()  # as another process would start: nothing remembered
    assert signing.secret_key(settings) == first
    with tx() as s:
        assert s.scalars(select(AppSecret.value)).all() == [first]
    assert len(first) >= 32


def test_secret_key_overrides_the_stored_one(settings: Settings, two_customers) -> None:
    ada, _ = two_customers
    configured = settings.with_overrides(secret_key="k" * 40)
    assert signing.secret_key(configured) == "k" * 40
    link = portal.create_link(configured, ada)
    with pytest.raises(portal.PortalLinkInvalid):
        portal.verify(settings, ada, link.token)  # signed with another key
    assert portal.verify(configured, ada, link.token).customer_id == ada


def test_a_short_secret_key_stops_start_up() -> None:
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        Settings.from_env({"SECRET_KEY": "short"})
