"""Every answer is JSON, also the ones Flask and werkzeug write as HTML themselves.

- **Redirects.** werkzeug's routing answers ``/customers//x`` (merged slashes) with a 308 and
  flask-openapi3's ``/docs`` with a 302, both with an HTML body; error handlers never see them
  (Flask returns a routing redirect as it is). After every request, a redirect's body becomes
  ``{"code", "message", "location"}``; its status and ``Location`` stay as they were.
- **Over-long request lines.** gunicorn answers a request line over its
  ``limit_request_line`` with its own HTML 414, before the app runs. gunicorn's limit is raised
  to its maximum (8190 bytes, ``worker.infra.gunicorn``) and the app enforces the old default,
  ``MAX_REQUEST_LINE`` (4094 bytes), as a JSON 414. Only a line beyond 8190 bytes, which no
  client of this API sends, still gets gunicorn's HTML answer.
"""

from __future__ import annotations

from flask import Flask, Response, json, request
from werkzeug.exceptions import RequestURITooLarge

# gunicorn's default limit_request_line: what clients could send before, they still can.
MAX_REQUEST_LINE = 4094


def request_line_length(wsgi: dict) -> int:
    """Bytes of ``METHOD target HTTP/x.y`` as the client sent them (gunicorn's ``RAW_URI``;
    under other servers the decoded path and query, which is never longer)."""
    target = wsgi.get("RAW_URI") or wsgi.get("REQUEST_URI")
    if target is None:
        query = wsgi.get("QUERY_STRING", "")
        target = wsgi.get("PATH_INFO", "") + ("?" + query if query else "")
    method = wsgi.get("REQUEST_METHOD", "")
    protocol = wsgi.get("SERVER_PROTOCOL", "")
    return len(method) + 1 + len(target.encode("latin-1", "replace")) + 1 + len(protocol)


def _refuse_long_request_line() -> None:
    length = request_line_length(request.environ)
    if length > MAX_REQUEST_LINE:
        raise RequestURITooLarge(
            f"The request line is {length} bytes; at most {MAX_REQUEST_LINE} are accepted."
        )


# Pages for browsers (webhooks.dashboard): their redirects stay as Flask writes them.
HTML_BLUEPRINTS = ("dashboard", "portal")


def _json_redirect(response: Response) -> Response:
    if request.blueprint in HTML_BLUEPRINTS:
        return response
    if 300 <= response.status_code < 400 and not response.is_json:
        location = response.headers.get("Location")
        response.set_data(
            json.dumps(
                {
                    "code": "REDIRECT",
                    "message": f"Moved to {location}" if location else "Moved",
                    "location": location,
                },
                separators=(",", ":"),
            )
        )
        response.mimetype = "application/json"
    return response


def install(app: Flask) -> None:
    """First before every other hook: the 414 comes before authentication and validation."""
    app.before_request_funcs.setdefault(None, []).insert(0, _refuse_long_request_line)
    app.after_request(_json_redirect)
