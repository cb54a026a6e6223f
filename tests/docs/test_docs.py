"""The README and docs/ stay true to the code: links resolve, every setting is documented, and
.ci/run can still read the test command."""

from __future__ import annotations

import re
import subprocess

from tests.support.processes import ROOT

PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _anchors(text: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    anchors = set()
    for heading in re.findall(r"^#+ (.+)$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def test_every_relative_link_between_pages_resolves() -> None:
    broken = []
    for page in PAGES:
        text = page.read_text()
        # Links inside code blocks are examples, not links.
        prose = re.sub(r"```.*?```", "", text, flags=re.S)
        for target in LINK.findall(prose):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            if not resolved.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif (
                anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved.read_text())
            ):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert broken == []


def test_readme_links_every_docs_page() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [p.name for p in (ROOT / "docs").glob("*.md") if f"(docs/{p.name})" not in readme]
    assert missing == []


def test_every_environment_variable_is_in_the_operations_table() -> None:
    code = "\n".join(
        p.read_text()
        for package in ("worker", "webhooks", "tasks")
        for p in (ROOT / package).rglob("*.py")
        if "migrations" not in p.parts
    )
    read = r"""(?:env\.get|environ\.get|_positive_int\(env,)\(?\s*["']([A-Z_]+)["']"""
    names = set(re.findall(read, code))
    names |= set(re.findall(r"""\benv(?:iron)?\[["']([A-Z_]+)["']\]""", code))
    procfile = (ROOT / "Procfile").read_text()
    names |= set(re.findall(r"\$\{([A-Z_]+):-", procfile))
    assert "DATABASE_URL" in names and "WEB_CONCURRENCY" in names
    table = (ROOT / "docs" / "operations.md").read_text()
    assert sorted(n for n in names if f"`{n}`" not in table) == []


def test_ci_reads_the_quick_start_test_command() -> None:
    command = subprocess.run(
        ["awk", "/<!-- ci:test-command -->/ {getline; getline; print; exit}", "README.md"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # The install first, the import-linter contracts before the suite, the whole suite last.
    assert command == "pip install -e '.[test]' && lint-imports && python -m pytest -q"
