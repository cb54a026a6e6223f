"""These tests also run through PgBouncer in transaction pooling mode (``pgbouncer``)."""

from __future__ import annotations

import pytest

from tests.conftest import POOLED_BACKENDS


@pytest.fixture(params=POOLED_BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The database backend under test: SQLite, PostgreSQL, or PostgreSQL behind PgBouncer."""
    return request.param
