"""Every HTTP error status is chosen in one table, ``webhooks.errors.STATUS``."""

from __future__ import annotations

import ast
import gc
import importlib
import pkgutil
from pathlib import Path

import tasks
import webhooks
import worker
from webhooks.errors import HEADERS, STATUS, status_of
from worker.errors import BillingError, ValidationFailed

ROOT = Path(__file__).resolve().parents[2]
PROJECT_PACKAGES = (worker, webhooks, tasks)

# The one status literal allowed outside webhooks/errors.py. GET /healthz answers 503 when a
# dependency is down, but that answer is the health report itself (HealthOut, documented as
# such in /openapi.json, read by load balancers), not an error response: the request
# succeeded in finding out. Everything that is an ErrorOut goes through the table.
ALLOWED = {("webhooks/api/health.py", 503)}


def _import_every_project_module() -> None:
    """Error classes live beside their domain (worker.inbox, worker.usage, ...); import them
    all, wherever they move, so that no subclass of BillingError escapes the walk."""
    for package in PROJECT_PACKAGES:
        for module in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if ".migrations" in module.name or module.name.endswith("__main__"):
                continue  # alembic scripts need a migration context; __main__ runs the CLI
            importlib.import_module(module.name)


def _subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def unmapped(classes: list[type]) -> list[str]:
    """The error classes without a row of their own in the table."""
    return [f"{c.__module__}.{c.__qualname__}" for c in classes if c not in STATUS]


def test_every_core_error_has_its_own_status() -> None:
    _import_every_project_module()
    core = [
        c
        for c in [BillingError, *_subclasses(BillingError)]
        if c.__module__.split(".")[0] in {p.__name__ for p in PROJECT_PACKAGES}
    ]
    assert len(core) >= 25  # the walk found the errors of worker.errors, inbox and usage
    assert unmapped(core) == []


def test_a_new_core_error_without_a_row_is_caught() -> None:
    class BrandNew(ValidationFailed):
        code = "BRAND_NEW"

    try:
        assert unmapped(_subclasses(BillingError)) == [f"{__name__}.{BrandNew.__qualname__}"]
    finally:
        del BrandNew
        gc.collect()  # classes sit in reference cycles; the next walk must not see this one


def test_statuses_come_from_the_table() -> None:
    from sqlalchemy.exc import OperationalError
    from werkzeug.exceptions import Conflict

    from worker.errors import ProviderDisabled, TaskNotFound, Unauthorized

    assert status_of(ProviderDisabled("dodo")) == 404
    assert status_of(TaskNotFound("x", known=[])) == 404
    assert status_of(Unauthorized()) == 401
    assert status_of(Conflict()) == 409  # werkzeug's other exceptions keep their own status
    assert status_of(RuntimeError()) == 500
    assert HEADERS[OperationalError] == {"Retry-After": "5"}


# -- nobody else chooses a status ----------------------------------------------------------

BUILDERS = {"error_response", "_respond", "abort", "make_response"}


def _error_status(node: ast.AST | None) -> int | None:
    """The first 4xx/5xx integer literal in ``node``, if any."""
    for n in ast.walk(node) if node is not None else ():
        if isinstance(n, ast.Constant) and type(n.value) is int and 400 <= n.value <= 599:
            return n.value
    return None


def _status_and_code(args: list[ast.expr]) -> bool:
    """``(4xx/5xx literal, "ERROR_CODE", ...)``: the signature of a hand-built error."""
    return (
        len(args) >= 2
        and isinstance(args[0], ast.Constant)
        and _error_status(args[0]) is not None
        and isinstance(args[1], ast.Constant)
        and isinstance(args[1].value, str)
        and args[1].value.isupper()
    )


def status_choices(source: str) -> list[tuple[int, int | None, str]]:
    """(line, status literal, what) for every place ``source`` picks an error status or builds
    an error response itself instead of raising a typed error."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module == "webhooks.errors":
            found += [
                (node.lineno, None, f"imports {a.name}") for a in node.names if a.name in BUILDERS
            ]
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in BUILDERS:
                found.append((node.lineno, _error_status(node), f"calls {name}()"))
            elif _status_and_code(node.args):
                # e.g. a home-made exception carrying its status: Rejected(400, "BAD", ...)
                status = _error_status(node.args[0])
                found.append((node.lineno, status, f"passes {status} to {name}()"))
            found += [
                (node.lineno, _error_status(kw.value), f"{kw.arg}={ast.unparse(kw.value)}")
                for kw in node.keywords
                if kw.arg in {"status", "code", "status_code"} and _error_status(kw.value)
            ]
        elif isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            status = _error_status(node.value)
            if status and any(
                isinstance(t, ast.Attribute) and t.attr == "status_code" for t in targets
            ):
                found.append((node.lineno, status, f"status_code = {ast.unparse(node.value)}"))
        elif isinstance(node, ast.Return) and isinstance(node.value, ast.Tuple):
            status = _error_status(ast.Tuple(elts=node.value.elts[1:]))
            if status:
                found.append((node.lineno, status, f"return {ast.unparse(node.value)}"))
    return sorted(found)


def test_no_module_but_errors_chooses_an_error_status() -> None:
    offenders = []
    for path in sorted((ROOT / "webhooks").rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        if relative == "webhooks/errors.py":
            continue
        offenders += [
            f"{relative}:{line}: {what}"
            for line, status, what in status_choices(path.read_text())
            if (relative, status) not in ALLOWED
        ]
    assert offenders == []


def test_the_status_check_sees_every_way_of_choosing() -> None:
    source = """
from webhooks.errors import error_response
def a(): return error_response(404, "X", "y")
def b(): flask.abort(403)
def c(): return {"code": "X"}, 409
def d(): r.status_code = 503
def e(): return Response("x", status=400)
def f(): raise Rejected(401, "INVALID_SIGNATURE", "x")
def g(): r.status_code = 200  # success statuses are the view's business
"""
    assert [line for line, _, _ in status_choices(source)] == [2, 3, 4, 5, 6, 7, 8]
