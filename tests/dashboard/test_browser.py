"""The dashboard and the portal in a real browser: Debian's Chromium driven by Playwright,
against gunicorn on PostgreSQL. Screenshots of every page go to tests/artifacts/dashboard/.

Never ``playwright install``: the browser is /usr/bin/chromium (``.ci/run`` installs the
``chromium`` package when it is missing).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.processes import (
    ROOT,
    create_pg_database,
    drop_pg_database,
    gunicorn,
    process_env,
)
from worker import ledger
from worker.access import apikeys, portal
from worker.access.scopes import READ
from worker.config import Settings
from worker.infra import migrate
from worker.infra.db import dispose_engines, transaction
from worker.ledger import holds
from worker.models import LedgerEntry

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
ARTIFACTS = ROOT / "tests" / "artifacts" / "dashboard"
# A PostgreSQL-backed server refuses a bootstrap key shorter than 32 characters.
ADMIN_KEY = "browser-key-0123456789abcdefghijklmn"

pytestmark = pytest.mark.slow

if not os.path.exists(CHROMIUM) and os.environ.get("CI") != "true":
    pytest.skip("no /usr/bin/chromium (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """gunicorn on a fresh PostgreSQL database with Ada (15 + 13 - 3 = 25.00 USD), Bob, and a
    read key."""
    tmp = tmp_path_factory.mktemp("dashboard-browser")
    name, url = create_pg_database()
    settings = Settings(database_url=url, api_key=ADMIN_KEY)
    migrate.upgrade(settings)
    with transaction(settings) as s:
        ada, _ = ledger.create_customer(s, email="ada@example.com", name="Ada Lovelace")
        bob, _ = ledger.create_customer(s, email="bob@example.com", name="Bob Babbage")
        _, read_key = apikeys.create_key(s, name="viewer", scopes=[READ])
        ids = ada.customer_id, bob.customer_id
    for i, amount in enumerate((1500, 1300, -300)):
        ledger.post_own(
            settings,
            ledger.Leg(
                customer_id=ids[0],
                currency="USD",
                amount=abs(amount),
                is_credit=amount > 0,
                reason=f"top-up {i + 1}",
                key=ledger.client_key(f"seed-{i}"),
                actor="test",
            ),
        )
    env = process_env(DATABASE_URL=url, BILLING_API_KEY=ADMIN_KEY)
    try:
        with gunicorn(env, tmp, workers=2) as base:
            yield {
                "settings": settings,
                "base": base,
                "ada": ids[0],
                "bob": ids[1],
                "read_key": read_key,
            }
    finally:
        dispose_engines()
        drop_pg_database(name)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser) -> Iterator[object]:
    """A fresh browser context (no cookies), 1280 px wide."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        yield context.new_page()
    finally:
        context.close()


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def sign_in(page, base: str, key: str) -> None:
    """Sign in with the keyboard alone: the key field has focus, Enter submits."""
    page.goto(base + "/dashboard")
    assert "/dashboard/sign-in" in page.url
    assert page.evaluate("document.activeElement.id") == "api_key"
    page.keyboard.type(key)
    page.keyboard.press("Enter")
    page.wait_for_url(lambda url: urlsplit(url).path.rstrip("/") == "/dashboard")


def unlabelled_inputs(page) -> list[str]:
    """Visible inputs and selects with no label (labels, or aria-label)."""
    return page.evaluate(
        """() => [...document.querySelectorAll('input:not([type=hidden]), select')]
            .filter(e => e.labels.length === 0 && !e.getAttribute('aria-label'))
            .map(e => e.name || e.id)"""
    )


def chart_points(page) -> str:
    return page.locator("#chart-USD polyline").get_attribute("points")


def ledger_rows(stack, customer_id: str) -> int:
    with transaction(stack["settings"]) as s:
        return len(s.query(LedgerEntry).filter_by(customer_id=customer_id).all())


def test_sign_in_find_a_customer_credit_it_and_see_it(stack, page) -> None:
    base = stack["base"]
    page.goto(base + "/dashboard")
    shot(page, "01-sign-in")
    sign_in(page, base, ADMIN_KEY)
    assert page.locator("h2", has_text="Owed in USD").is_visible()
    assert unlabelled_inputs(page) == []
    shot(page, "02-overview")

    page.get_by_role("link", name="Customers").click()
    page.get_by_label("Email or name contains").fill("lovelace")
    page.get_by_role("button", name="Search").click()
    assert page.locator("td", has_text="bob@example.com").count() == 0
    shot(page, "03-customers")
    page.get_by_role("link", name="Ada Lovelace").click()
    balance = page.locator('[data-currency="USD"] .big')
    assert balance.inner_text() == "25.00 USD"
    before = chart_points(page)
    assert unlabelled_inputs(page) == []
    shot(page, "04-customer")

    page.get_by_label("Amount (e.g. 12.50)").fill("12.50")
    page.get_by_label("Reason (kept in the ledger)").fill("Goodwill credit")
    page.get_by_role("button", name="Post entry").click()
    assert page.get_by_role("status").inner_text().startswith("Credited 12.50 USD")
    assert balance.inner_text() == "37.50 USD"
    newest = page.locator("#ledger tbody tr").first
    assert "+12.50 USD" in newest.inner_text() and "Goodwill credit" in newest.inner_text()
    assert "37.50 USD" in newest.inner_text()
    after = chart_points(page)
    assert after != before and len(after.split()) > len(before.split())
    shot(page, "05-customer-credited")

    # Reloading the page the form redirected to posts nothing more.
    page.reload()
    assert ledger_rows(stack, stack["ada"]) == 4


def test_a_read_key_cannot_credit(stack, page) -> None:
    base, ada = stack["base"], stack["ada"]
    sign_in(page, base, stack["read_key"])
    page.goto(f"{base}/dashboard/customers/{ada}")
    assert page.get_by_role("button", name="Post entry").count() == 0
    assert page.get_by_role("link", name="Operations").count() == 0
    shot(page, "06-customer-read-key")
    rows = ledger_rows(stack, ada)
    token = page.locator('input[name="csrf_token"]').first.get_attribute("value")
    forged = page.request.post(
        f"{base}/dashboard/customers/{ada}/entries",
        form={
            "csrf_token": token,
            "entry_type": "credit",
            "amount": "1000",
            "currency": "USD",
            "reason": "forged",
        },
        max_redirects=0,
    )
    assert forged.status == 403 and "credit" in forged.text()
    assert ledger_rows(stack, ada) == rows


def test_csrf_is_refused(stack, page) -> None:
    base, ada = stack["base"], stack["ada"]
    sign_in(page, base, ADMIN_KEY)
    rows = ledger_rows(stack, ada)
    form = {"entry_type": "credit", "amount": "5", "currency": "USD", "reason": "csrf"}
    # Our own origin, with the session cookie but without the form's token.
    missing = page.request.post(
        f"{base}/dashboard/customers/{ada}/entries", form=form, max_redirects=0
    )
    assert missing.status == 403 and "CSRF" in missing.text()
    # Another site's page submitting a form to us: SameSite=Strict keeps the cookie off it.
    fields = "".join(f'<input name="{k}" value="{v}">' for k, v in form.items())
    # localhost is another site than 127.0.0.1 (where the session cookie lives).
    page.goto(base.replace("127.0.0.1", "localhost") + "/healthz")
    page.set_content(
        f'<form id="f" method="post" action="{base}/dashboard/customers/{ada}/entries">'
        f"{fields}</form>"
    )
    page.evaluate("document.getElementById('f').submit()")
    page.wait_for_url(lambda url: urlsplit(url).path == "/dashboard/sign-in")
    assert ledger_rows(stack, ada) == rows


def test_the_portal_link_works_and_refuses_other_customers_and_expiry(stack, page) -> None:
    base, ada, bob = stack["base"], stack["ada"], stack["bob"]
    r = httpx.post(
        f"{base}/customers/{ada}/portal-sessions",
        headers={"Authorization": f"Bearer {stack['read_key']}"},
    )
    assert r.status_code == 200, r.text
    link = r.json()["url"]
    page.goto(link)
    assert page.locator("h1").inner_text() == "Hello, Ada Lovelace"
    assert "USD" in page.locator(".big").first.inner_text()
    assert page.locator("form").count() == 0
    assert page.get_by_role("img", name="USD spending per day, last 30 days").is_visible()
    shot(page, "07-portal")

    token = urlsplit(link).path.rsplit("/", 1)[1]
    other = page.goto(f"{base}/portal/{bob}/{token}")
    assert other.status == 401 and "Bob" not in page.content()
    shot(page, "08-portal-other-customer")
    expired = portal.link_until(stack["settings"], ada, datetime.now(UTC) - timedelta(minutes=1))
    gone = page.goto(base + expired.path)
    assert gone.status == 401 and "expired" in page.inner_text("body")
    shot(page, "09-portal-expired")


def test_operations_page(stack, page) -> None:
    sign_in(page, stack["base"], ADMIN_KEY)
    page.get_by_role("link", name="Operations").click()
    assert page.get_by_role("heading", name="Periodic tasks").is_visible()
    assert page.get_by_role("button", name="Run sweep-inbox now").is_visible()
    assert unlabelled_inputs(page) == []
    shot(page, "10-operations")


def test_release_a_hold_from_the_customer_page(stack, page) -> None:
    base, ada = stack["base"], stack["ada"]
    with transaction(stack["settings"]) as s:
        hold_id = holds.create_hold(
            s, customer_id=ada, currency="USD", amount=400, actor="test", reason="llm call"
        ).hold.hold_id
    sign_in(page, base, ADMIN_KEY)
    assert page.locator("#holds-soon", has_text=hold_id).is_visible()
    page.goto(f"{base}/dashboard/customers/{ada}")
    assert page.locator(f"#hold-{hold_id}").is_visible()
    assert "held 4.00 USD" in page.locator('[data-currency="USD"]').inner_text()
    shot(page, "14-customer-hold")
    page.get_by_role("button", name=f"Release hold {hold_id}").click()
    assert page.get_by_role("status").inner_text().startswith(f"Hold {hold_id} released")
    assert page.locator(f"#hold-{hold_id}").count() == 0
    assert "held 0.00 USD" in page.locator('[data-currency="USD"]').inner_text()
    with transaction(stack["settings"]) as s:
        assert holds.get_hold(s, ada, hold_id).status == "released"


def test_pages_fit_a_375_px_screen(stack, browser) -> None:
    context = browser.new_context(viewport={"width": 375, "height": 812})
    try:
        page = context.new_page()
        base, ada = stack["base"], stack["ada"]
        sign_in(page, base, ADMIN_KEY)
        for name, path in (
            ("11-narrow-overview", "/dashboard"),
            ("12-narrow-customer", f"/dashboard/customers/{ada}"),
            ("13-narrow-operations", "/dashboard/operations"),
        ):
            page.goto(base + path)
            shot(page, name)
            # Wide tables scroll inside their card; the page itself never scrolls sideways.
            wide = page.evaluate(
                """() => [...document.querySelectorAll('body *')]
                    .filter(e => e.getBoundingClientRect().right > 376)
                    .filter(e => !e.closest('.scroll, figure'))
                    .map(e => e.tagName + '.' + e.className).slice(0, 5)"""
            )
            assert page.evaluate("document.documentElement.scrollWidth") <= 375, (path, wide)
    finally:
        context.close()


def test_screenshots_are_written(stack) -> None:
    assert Path(ARTIFACTS).is_dir()
