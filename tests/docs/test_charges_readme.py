"""The checkout snippet in docs/charges.md (linked from the README) runs as written against
gunicorn."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.support.processes import (
    ROOT,
    create_pg_database,
    drop_pg_database,
    gunicorn,
    process_env,
)
from worker import ledger
from worker.config import Settings
from worker.infra import migrate
from worker.infra.db import dispose_engines, get_engine, transaction
from worker.models import LedgerEntry

# A PostgreSQL-backed server refuses a bootstrap key shorter than 32 characters.
README_KEY = "readme-key-0123456789abcdefghijklmnop"

MARKER = "<!-- test:checkout-snippet -->"


CHARGES_DOC = ROOT / "docs" / "charges.md"


def readme_snippet() -> str:
    text = CHARGES_DOC.read_text()
    match = re.search(re.escape(MARKER) + r"\s*```python\n(.*?)```", text, re.S)
    assert match, f"docs/charges.md has no python block after {MARKER}"
    return match.group(1)


@pytest.mark.slow
def test_readme_checkout_snippet_runs_against_a_live_server(tmp_path: Path) -> None:
    name, url = create_pg_database()
    settings = Settings(database_url=url)
    try:
        migrate.upgrade(settings)
        get_engine(settings).dispose()
        env = process_env(DATABASE_URL=url, BILLING_API_KEY=README_KEY)
        with gunicorn(env, tmp_path) as base:
            snippet = tmp_path / "checkout.py"
            snippet.write_text(readme_snippet())
            run = subprocess.run(
                [sys.executable, str(snippet)],
                env=process_env(BILLING_URL=base, BILLING_API_KEY=README_KEY),
                capture_output=True,
                text=True,
                timeout=60,
            )
        assert run.returncode == 0, run.stderr
        assert run.stdout.startswith("checkout flow OK: cus_")
        assert run.stdout.rstrip().endswith("has 3000 USD cents of wallet credit")
        with transaction(settings) as s:
            report = ledger.verify(s)
            assert report.ok, report.problems
            kinds = [
                (e.event_type, e.amount)
                for e in s.scalars(select(LedgerEntry).order_by(LedgerEntry.seq))
            ]
        assert kinds == [
            ("merchant_adjustment", 3000),  # the welcome credit
            ("payment", 2000),  # order_1, all from the wallet
            ("payment", 1000),  # order_2 ...
            ("payment_reversal", 1000),  # ... card declined, given back
            ("payment", 1000),  # order_3, the card paid 3000
            ("refund", 3000),  # the card part of order_3 refunded as credit, once
        ]
    finally:
        dispose_engines()
        drop_pg_database(name)


def test_docs_document_the_refund_cap_setting() -> None:
    assert "| `WALLET_REFUND_MAX` |" in (ROOT / "docs" / "operations.md").read_text()
    assert "`WALLET_REFUND_MAX`" in (ROOT / "README.md").read_text()
    text = CHARGES_DOC.read_text()
    assert text.startswith("# Checkout with the wallet first")
    assert "WALLET_REFUND_CAP_EXCEEDED" in text
    assert "docs/charges.md" in (ROOT / "README.md").read_text()
