"""Signing in to the dashboard from Flask's test client."""

from __future__ import annotations

import re

from flask.testing import FlaskClient

TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def sign_in(client: FlaskClient, key: str = "test-key") -> str:
    """Sign ``client`` in with ``key``; answers the session's CSRF token."""
    form = client.get("/dashboard/sign-in")
    token = TOKEN.search(form.text).group(1)
    r = client.post("/dashboard/sign-in", data={"csrf_token": token, "api_key": key})
    assert r.status_code == 303, r.text
    page = client.get("/dashboard")
    assert page.status_code == 200
    return TOKEN.search(page.text).group(1)
