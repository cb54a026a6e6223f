"""Which scope each API route needs, declared beside the route, enforced before the view.

``@requires(READ)`` marks a view; ``@requires(ByField("entry_type", {...}))`` marks one whose
scope depends on the body (a credit and a debit share the ledger-entries URL). The
``enforce_scope`` hook runs after authentication on every API blueprint and refuses a key
without the scope (403 ``FORBIDDEN`` naming ``required_scope``) before anything is read or
written. A route that declares nothing is refused to every key but admin: forgetting the
declaration fails closed, and ``tests/webhooks/test_scopes.py`` fails for it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from flask import current_app, g, request

from worker.access.scopes import ADMIN

View = TypeVar("View", bound=Callable[..., object])
ATTRIBUTE = "required_scope"


@dataclass(frozen=True)
class ByField:
    """The scope named by a body field's value, e.g. ``entry_type`` credit -> ``credit``.

    A value not in ``scopes`` needs no scope here: the body's validation refuses it (422),
    and nothing is written either way.
    """

    field: str
    scopes: Mapping[str, str]
    # Read from a submitted form instead of a JSON body (the dashboard's forms).
    form: bool = False

    def resolve(self) -> str | None:
        if self.form:
            value = request.form.get(self.field)
        else:
            body = request.get_json(silent=True) if request.is_json else None
            value = body.get(self.field) if isinstance(body, dict) else None
        return self.scopes.get(value) if isinstance(value, str) else None


Requirement = str | ByField


def requires(requirement: Requirement) -> Callable[[View], View]:
    """Declare the scope a view needs (put it under the route decorator)."""

    def mark(view: View) -> View:
        setattr(view, ATTRIBUTE, requirement)
        return view

    return mark


def requirement_of(view: Callable[..., object] | None) -> Requirement | None:
    """What ``view`` declared (looking through flask-openapi3's wrapper), or None."""
    if view is None:
        return None
    declared = getattr(view, ATTRIBUTE, None)
    return declared if declared is not None else getattr(inspect.unwrap(view), ATTRIBUTE, None)


def enforce_scope() -> None:
    """``before_request`` hook, after ``require_api_key``: the principal holds the scope."""
    if request.method == "OPTIONS":
        return
    requirement = requirement_of(current_app.view_functions.get(request.endpoint or ""))
    if requirement is None:
        needed: str | None = ADMIN  # undeclared: fail closed
    elif isinstance(requirement, ByField):
        needed = requirement.resolve()
    else:
        needed = requirement
    if needed is not None:
        g.principal.require(needed)
