"""Shared pieces of the benchmark suite: the run context and one result row."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Row:
    """One line of the results table."""

    section: str  # e.g. "ledger core", "http", "webhooks", "usage", "scan", "memory"
    name: str  # e.g. "entries/s spread"
    value: float
    unit: str  # e.g. "entries/s", "ms"
    goal: str = ""  # e.g. ">= 0.7x raw"
    reference: str | None = None  # key into Context.references for the ratio column
    ratio: float | None = None
    note: str = ""
    load: str = ""  # the load generator: "pgbench", "wrk", "process pool", "sql"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Context:
    """What every benchmark module receives."""

    quick: bool
    database_url: str  # a scratch PostgreSQL database (SQLAlchemy URL), migrated
    pg_dsn: str  # the same database as a libpq DSN (for pgbench/psycopg)
    redis_url: str
    workdir: str  # a temporary directory for logs and scripts
    # Raw-SQL reference figures measured in this run, e.g. {"raw_spread": 4100.0}.
    references: dict[str, float] = field(default_factory=dict)
    # The run's ExitStack: services started on first use (benchmarks.services.shared) are
    # stopped when the run ends.
    stack: Any = None
    shared: dict[str, Any] = field(default_factory=dict)

    def ratio(self, value: float, reference: str) -> float | None:
        ref = self.references.get(reference)
        return value / ref if ref else None
