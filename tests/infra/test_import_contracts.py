"""The core stays free of Celery, Flask and the outer packages (issue 12)."""

from __future__ import annotations

import ast
import json
import os
import pkgutil
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import worker
import worker.infra

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("celery", "kombu", "billiard", "flask", "webhooks", "tasks")
EDGES = {"worker.celery", "worker.cli", "worker.infra.celery_app", "worker.infra.redis_transport"}
CORE = ["ledger", "usage", "inbox", "payments", "notify", "charges", "jobs", "access"]


@pytest.mark.parametrize("name", CORE)
def test_importing_a_core_package_loads_no_celery_flask_webhooks_or_tasks(name: str) -> None:
    code = (
        "import importlib, json, sys\n"
        f"importlib.import_module('worker.{name}')\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == []


def test_lint_imports_keeps_every_contract() -> None:
    script = Path(sys.executable).with_name("lint-imports")
    command = str(script) if script.exists() else shutil.which("lint-imports")
    assert command, "lint-imports not installed (pip install -e '.[test]')"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [command, "--no-cache"], cwd=ROOT, capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_core_contract_lists_every_module_but_the_edges() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    core = next(c for c in config["contracts"] if c["name"].startswith("The core does not"))
    top = {f"worker.{m.name}" for m in pkgutil.iter_modules(worker.__path__)}
    infra = {f"worker.infra.{m.name}" for m in pkgutil.iter_modules(worker.infra.__path__)}
    expected = (top - {"worker.infra", "worker.__main__"} | infra) - EDGES
    assert sorted(core["source_modules"]) == sorted(expected)


def test_benchmarks_do_not_import_the_tests() -> None:
    importers = []
    for path in sorted((ROOT / "benchmarks").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            if any(n == "tests" or n.startswith("tests.") for n in names):
                importers.append(path.relative_to(ROOT).as_posix())
    assert importers == []
