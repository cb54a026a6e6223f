"""The environment runs what pyproject.toml promises: every installed dependency satisfies its
range, floors past known advisories included (docs/operations.md#dependencies)."""

from __future__ import annotations

import importlib.metadata
import tomllib

from packaging.requirements import Requirement

from tests.support.processes import ROOT


def _requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [
        Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]
    ]


def test_every_installed_dependency_is_in_its_range() -> None:
    outside = [
        f"{r.name} {importlib.metadata.version(r.name)} not in {r.specifier}"
        for r in _requirements()
        if not r.specifier.contains(importlib.metadata.version(r.name), prereleases=True)
    ]
    assert outside == []


def test_the_server_is_past_gunicorns_request_smuggling_advisories() -> None:
    gunicorn = next(r for r in _requirements() if r.name == "gunicorn")
    assert not gunicorn.specifier.contains("22.0.0") and gunicorn.specifier.contains("23.0.0")
