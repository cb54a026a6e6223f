"""The operator dashboard (``/dashboard``) and the customer portal (``/portal``): pages written
on the server from Jinja templates, charts as SVG, one stylesheet, no JavaScript, nothing
fetched from anywhere; templates and CSS ship inside the package.

- ``session``: sign-in with an API key, the session cookie, CSRF, scopes;
- ``views``: overview, customers, a customer's page, its credit/debit form, the Release
  button of its holds and its CSV export;
- ``operations``: inbox events (replay), notifications (resend), periodic tasks (run now),
  the audit log;
- ``portal``: the read-only page a signed link opens for one customer;
- ``charts``, ``formatting``: SVG charts, amounts and times.

Every view reads through the core (``worker.ledger.dashboard_views`` and the functions the
CLI and the admin API call) and changes money only through the posting pipeline.
"""

from __future__ import annotations

from flask import Blueprint, Flask, Response, redirect, render_template, request, url_for

from webhooks import errors
from webhooks.dashboard import formatting
from webhooks.dashboard.session import SignInRequired
from worker.errors import BillingError, PortalLinkInvalid

bp = Blueprint(
    "dashboard",
    __name__,
    url_prefix="/dashboard",
    template_folder="templates",
    static_folder="static",
)
portal_bp = Blueprint("portal", __name__, url_prefix="/portal", template_folder="templates")

# No script, no inline style, no frames, forms only to ourselves.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
HTML_BLUEPRINTS = ("dashboard", "portal")


def _sign_in_redirect(_: SignInRequired) -> Response:
    target = request.full_path if request.method == "GET" else url_for("dashboard.overview")
    return redirect(url_for("dashboard.sign_in", next=target.rstrip("?")), 303)


def _dashboard_error(error: BillingError) -> tuple[str, int]:
    status = errors.status_of(error)
    return render_template("dashboard/error.html", error=error, status=status), status


def _portal_error(error: BillingError) -> tuple[str, int]:
    status = errors.status_of(error)
    message = error.message if isinstance(error, PortalLinkInvalid) else "Not available."
    return render_template("dashboard/portal_error.html", message=message), status


def _headers(response: Response) -> Response:
    if request.blueprint in HTML_BLUEPRINTS:
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        # The portal's URL is its credential: never sent on as a Referer, never cached.
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        if request.endpoint != "dashboard.static":
            response.headers.setdefault("Cache-Control", "no-store")
    return response


# The routes, the hook and the error pages go on the blueprints once, at import; Flask copies
# them into each app that registers the blueprints (create_app() may run more than once).
from webhooks.dashboard import operations, portal, session, views  # noqa: E402, F401

bp.before_request(session.enforce)
bp.register_error_handler(SignInRequired, _sign_in_redirect)
bp.register_error_handler(BillingError, _dashboard_error)
portal_bp.register_error_handler(BillingError, _portal_error)


def install(app: Flask) -> None:
    """Register both blueprints, the security headers and the template filters."""
    app.register_blueprint(bp)
    app.register_blueprint(portal_bp)
    app.after_request(_headers)
    app.jinja_env.filters["money"] = formatting.money
    app.jinja_env.filters["amount"] = formatting.decimal_text
    app.jinja_env.filters["when"] = formatting.when
    app.jinja_env.filters["exact_money"] = formatting.exact_money
