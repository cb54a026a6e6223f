"""Sign-in, the overview, customers and one customer's page with its credit/debit form, its
holds' Release buttons and CSV export. Views parse, open one transaction, call the core and
render; money moves only through ``worker.ledger.post_own``, exactly as ``POST
.../ledger-entries`` moves it, and a hold is released only by ``worker.ledger.holds
.release_hold``, exactly as ``POST .../holds/{id}/release`` releases it."""

from __future__ import annotations

import csv
import io
import secrets
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

from flask import Response, current_app, redirect, render_template, request, stream_with_context
from flask import url_for as flask_url_for
from pydantic import ValidationError
from sqlalchemy import select

from webhooks.api.schemas import LedgerEntryCreate
from webhooks.api.wallets import entry_leg
from webhooks.dashboard import bp, charts, session
from webhooks.dashboard.formatting import money
from webhooks.errors import status_of
from webhooks.scopes import ByField, requires
from worker import inbox, ledger, notify
from worker.access import audit, portal
from worker.access.scopes import CREDIT, DEBIT, READ
from worker.errors import (
    BillingError,
    DuplicateEntry,
    HoldNotActive,
    IdempotencyKeyReused,
    InsufficientBalance,
    Unauthorized,
    ValidationFailed,
)
from worker.infra.db import transaction
from worker.ledger import credit_terms, holds
from worker.ledger import dashboard_views as views
from worker.ledger.lot_schemas import wallet_list
from worker.ledger.lot_views import lot_status
from worker.models import LEDGER_EVENT_TYPES, LedgerEntry, utcnow
from worker.money import minor_unit_exponent
from worker.reports.analytics import spend_by_meter


def _settings():  # type: ignore[no-untyped-def]
    return current_app.config["SETTINGS"]


def _tx():  # type: ignore[no-untyped-def]
    return transaction(_settings())


def page(template: str, status: int = 200, **context: Any) -> tuple[str, int]:
    """A dashboard page, with what every page's frame needs (who is signed in, the token)."""
    caller = session.principal()
    context.setdefault("today", utcnow().date())
    html = render_template(
        f"dashboard/{template}",
        principal=caller,
        is_admin=caller.is_admin,
        csrf_token=session.csrf_token(),
        csrf_field=session.CSRF_FIELD,
        **context,
    )
    return html, status


# -- sign in and out ---------------------------------------------------------------------------


def _safe_next(target: str | None) -> str:
    """Only a path inside the dashboard: never an open redirect to another site."""
    parts = urlsplit(target or "")
    if parts.scheme or parts.netloc or not parts.path.startswith("/dashboard"):
        return flask_url_for("dashboard.overview")
    return target or flask_url_for("dashboard.overview")


@bp.get("/sign-in")
def sign_in() -> Response:
    response = Response()
    token = session.sign_in_token(response)
    response.set_data(
        render_template(
            "dashboard/sign_in.html",
            csrf_token=token,
            csrf_field=session.CSRF_FIELD,
            next=_safe_next(request.args.get("next")),
            error=None,
        )
    )
    response.mimetype = "text/html"
    return response


@bp.post("/sign-in")
def sign_in_post() -> Response:
    session.check_sign_in_token()
    fingerprint = session.authenticate_key(request.form.get("api_key", ""))
    if fingerprint is None:
        response = Response(status=status_of(Unauthorized))
        token = session.sign_in_token(response)
        response.set_data(
            render_template(
                "dashboard/sign_in.html",
                csrf_token=token,
                csrf_field=session.CSRF_FIELD,
                next=_safe_next(request.form.get("next")),
                error="That API key is not valid (or has been revoked).",
            )
        )
        response.mimetype = "text/html"
        return response
    response = redirect(_safe_next(request.form.get("next")), 303)
    session.start(response, fingerprint)
    return response


@bp.post("/sign-out")
@requires(READ)
def sign_out() -> Response:
    response = redirect(flask_url_for("dashboard.sign_in"), 303)
    session.end(response)
    return response


# -- overview ----------------------------------------------------------------------------------


@bp.get("", strict_slashes=False)
@requires(READ)
def overview() -> tuple[str, int]:
    now = utcnow()
    with _tx() as s:
        liabilities = views.liabilities(s)
        flows = views.daily_flows(s, days=30, now=now)
        low = views.low_wallets(s)
        events = inbox.operate.count_by_status(s)
        messages = notify.outbox.count_by_status(s)
        expiring = views.expiring_credit(s, days=7, now=now)
        holds_soon = views.holds_expiring_soon(s, hours=24, now=now)
    flow_charts = [
        (c.currency, charts.daily_bars(flows, c.currency, f"flows-{c.currency}", today=now.date()))
        for c in liabilities
    ]
    return page(
        "overview.html",
        liabilities=liabilities,
        flow_charts=flow_charts,
        low=low,
        failed_events=events.get("failed", 0),
        failed_messages=messages.get("failed", 0),
        expiring=expiring,
        holds_soon=holds_soon,
    )


# -- customers ---------------------------------------------------------------------------------


@bp.get("/customers")
@requires(READ)
def customers() -> tuple[str, int]:
    q = request.args.get("q", "").strip()[:200]
    after = request.args.get("after") or None
    with _tx() as s:
        found = views.search_customers(s, q, after=after)
    return page("customers.html", q=q, found=found)


def _day(name: str) -> date | None:
    raw = request.args.get(name, "").strip()
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise ValidationFailed(name, "must be a date, YYYY-MM-DD") from None


def _filters() -> views.LedgerFilter:
    since, until = _day("since"), _day("until")
    event_type = request.args.get("event_type") or None
    return views.LedgerFilter(
        currency=(request.args.get("currency") or "").upper() or None,
        event_type=event_type,
        since=datetime.combine(since, time.min, UTC) if since else None,
        # "until" is the last day shown: entries before the next midnight.
        until=datetime.combine(until + timedelta(days=1), time.min, UTC) if until else None,
    )


def _before() -> int | None:
    raw = request.args.get("before", "")
    if not raw:
        return None
    if not raw.isdigit() or len(raw) > 18:
        raise ValidationFailed("before", "not a cursor this page gave out")
    return int(raw)


def _customer_context(customer_id: str, **extra: Any) -> dict[str, Any]:
    filters = _filters()
    now = utcnow()
    with _tx() as s:
        customer = ledger.get_customer(s, customer_id)
        wallets = wallet_list(s, customer_id)
        lots = views.live_lots(s, customer_id)
        series = views.balance_series(s, customer_id, [w.currency for w in wallets.items])
        entries = views.ledger_page(s, customer_id, filters, before=_before())
        held = views.held_balances(s, customer_id)
        active_holds = views.holds_of(s, customer_id)
        meters = spend_by_meter(s, customer_id, days=30, now=now)
    balance_charts = [
        (
            w.currency,
            charts.balance_line(series.get(w.currency, []), w.currency, f"balance-{w.currency}"),
        )
        for w in wallets.items
    ]
    caller = session.principal()
    args = {
        k: v for k, v in request.args.items() if k in ("currency", "event_type", "since", "until")
    }
    return {
        "customer": customer,
        "wallets": wallets,
        "lots": [(lot, lot_status(lot, now)) for lot in lots],
        "balance_charts": balance_charts,
        "entries": entries,
        "filters": args,
        "held": held,
        "holds": active_holds,
        "now": now,
        "meters": meters,
        "event_types": LEDGER_EVENT_TYPES,
        "currencies": _settings().wallet_currencies,
        "can_credit": caller.allows(CREDIT),
        "can_debit": caller.allows(DEBIT),
        "new_key": "dash_" + secrets.token_urlsafe(12),
        "form": {},
        "form_error": None,
        "notice": None,
        "portal_link": None,
        **extra,
    }


@bp.get("/customers/<customer_id>")
@requires(READ)
def customer(customer_id: str) -> tuple[str, int]:
    notice = None
    posted = request.args.get("posted")
    released = request.args.get("released")
    if released:
        with _tx() as s:
            try:
                hold = holds.get_hold(s, customer_id, released[:64])
            except BillingError:
                hold = None
        if hold is not None and hold.status in ("released", "expired"):
            notice = (
                f"Hold {hold.hold_id} {hold.status}: {money(hold.amount, hold.currency)} "
                "available again."
            )
    elif posted:
        with _tx() as s:
            found = s.scalar(
                select(LedgerEntry).where(
                    LedgerEntry.id == posted[:64], LedgerEntry.customer_id == customer_id
                )
            )
            if found is not None:
                kind = "Credited" if found.is_credit else "Debited"
                notice = f"{kind} {money(found.amount, found.currency)}: entry {found.id}."
    return page("customer.html", **_customer_context(customer_id, notice=notice))


def parse_amount(text: str, currency: str) -> int:
    """``"12.50"`` USD -> 1250 minor units, exactly; more decimals than the currency has is an
    error naming ``amount`` (never rounded)."""
    try:
        value = Decimal(text.strip().replace(",", ""))
    except InvalidOperation:
        raise ValidationFailed("amount", "must be a number, e.g. 12.50") from None
    try:
        exponent = minor_unit_exponent(currency)
    except ValueError:
        raise ValidationFailed("currency", "unknown currency") from None
    minor = value.scaleb(exponent)
    if not value.is_finite() or minor != minor.to_integral_value():
        raise ValidationFailed("amount", f"{currency} has {exponent} decimal places at most")
    return int(minor)


def _entry_body(form: Any) -> LedgerEntryCreate:
    currency = (form.get("currency") or "").upper()
    expires = (form.get("expires_on") or "").strip()
    fields: dict[str, Any] = {
        "amount": parse_amount(form.get("amount") or "", currency),
        "currency": currency,
        "entry_type": form.get("entry_type"),
        "reason": (form.get("reason") or "").strip() or None,
        "idempotency_key": (form.get("idempotency_key") or "").strip() or None,
    }
    if form.get("entry_type") == "credit":
        fields["category"] = form.get("category") or None
        if expires:
            try:
                day = date.fromisoformat(expires)
            except ValueError:
                raise ValidationFailed("expires_on", "must be a date, YYYY-MM-DD") from None
            fields["expires_at"] = datetime.combine(day, time.min, UTC).isoformat()
    if not fields["reason"]:
        raise ValidationFailed("reason", "say why: it is kept in the ledger")
    try:
        return LedgerEntryCreate.model_validate(fields)
    except ValidationError as invalid:
        first = invalid.errors(include_url=False, include_input=False)[0]
        field = ".".join(str(p) for p in first["loc"]) or "body"
        raise ValidationFailed(field, str(first["msg"])) from None


@bp.post("/customers/<customer_id>/entries")
@requires(ByField("entry_type", {"credit": CREDIT, "debit": DEBIT}, form=True))
def post_entry(customer_id: str) -> Any:
    """The credit/debit form: the same leg, checks and pipeline as the API's ledger entry."""
    form = request.form
    try:
        body = _entry_body(form)
        leg = entry_leg(customer_id, body, session.principal())
        try:
            posted = ledger.post_own(_settings(), leg)
        except IdempotencyKeyReused as reused:
            with _tx() as s:
                raise credit_terms.with_lot_terms(s, reused, leg) from None
    except DuplicateEntry as duplicate:
        notice = f"Already posted with this idempotency key: entry {duplicate.entry.id}."
        return page("customer.html", 409, **_customer_context(customer_id, notice=notice))
    except (ValidationFailed, InsufficientBalance, IdempotencyKeyReused) as error:
        # Shown next to the form, which keeps what was typed; a missing scope or a credit
        # over max_credit is the 403 page instead (webhooks.dashboard._dashboard_error).
        context = _customer_context(customer_id, form=dict(form), form_error=error.message)
        return page("customer.html", status_of(error), **context)
    return redirect(
        flask_url_for("dashboard.customer", customer_id=customer_id, posted=posted.entry.id), 303
    )


@bp.post("/customers/<customer_id>/holds/<hold_id>/release")
@requires(DEBIT)
def release_hold(customer_id: str, hold_id: str) -> Any:
    """A hold's Release button: ``worker.ledger.holds.release_hold``, the call ``POST
    .../holds/{id}/release`` makes, with the signed-in key as actor (the hold's
    ``closed_by``) and a ``hold.released`` audit entry in the same transaction. Releasing a
    hold that is already released (or expired) changes nothing and records nothing."""
    actor = session.principal().actor
    try:
        with _tx() as s:
            outcome = holds.release_hold(s, customer_id=customer_id, hold_id=hold_id, actor=actor)
            hold = outcome.hold
            assert hold is not None
            if not outcome.replayed:
                audit.record(
                    s,
                    actor,
                    "hold.released",
                    hold.hold_id,
                    {
                        "customer_id": customer_id,
                        "currency": hold.currency,
                        "amount": hold.amount,
                        "via": "dashboard",
                    },
                )
    except (HoldNotActive, ValidationFailed) as error:
        # Captured meanwhile (409), or a dispute's hold (422): said on the page.
        context = _customer_context(customer_id, notice=error.message)
        return page("customer.html", status_of(error), **context)
    return redirect(
        flask_url_for("dashboard.customer", customer_id=customer_id, released=hold.hold_id), 303
    )


@bp.post("/customers/<customer_id>/portal-link")
@requires(READ)
def portal_link(customer_id: str) -> tuple[str, int]:
    settings = _settings()
    with _tx() as s:
        ledger.get_customer(s, customer_id)
        link = portal.create_link(settings, customer_id)
        audit.record(
            s,
            session.principal().actor,
            "portal.link_created",
            customer_id,
            {"expires_at": link.expires_at.isoformat(), "via": "dashboard"},
        )
    url = request.url_root.rstrip("/") + link.path
    return page("customer.html", **_customer_context(customer_id, portal_link=(url, link)))


def _csv_safe(value: str | int) -> str | int:
    """A text cell a spreadsheet would run as a formula gets a leading apostrophe."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


@bp.get("/customers/<customer_id>/ledger.csv")
@requires(READ)
def export_csv(customer_id: str) -> Response:
    filters = _filters()
    with _tx() as s:
        ledger.get_customer(s, customer_id)  # a 404 page before any byte is streamed
        views.LedgerFilter.checked(filters, s)

    def rows() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(views.CSV_COLUMNS)
        with _tx() as s:
            for n, entry in enumerate(views.iter_ledger(s, customer_id, filters), 1):
                writer.writerow([_csv_safe(v) for v in views.csv_row(entry)])
                if n % 500 == 0:
                    yield buffer.getvalue()
                    buffer.seek(0)
                    buffer.truncate()
        yield buffer.getvalue()

    name = f"ledger-{customer_id}.csv".replace('"', "")
    response = Response(stream_with_context(rows()), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return response
