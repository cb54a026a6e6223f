"""The schema keeps the discipline that sharding by customer needs (docs/scaling.md, "Citus:
sharded by customer").

A customer-scoped table is one with a NOT NULL ``customer_id`` column, or a foreign key to a
customer-scoped table. For each of them:

- its primary key and every unique constraint or unique index include ``customer_id`` (a
  uniqueness Citus can check on one shard);
- a foreign key to another customer-scoped table includes ``customer_id`` on both sides, paired
  (no row can reference another customer's row).

Tables older than the rule that break it are listed in ``EXCEPTIONS``, one entry per broken
key, with the reason and how it is fixed before distributing. The list can only shrink: a
listed exception that no longer occurs fails the test too. A new table follows the rule.
"""

from __future__ import annotations

import re

from sqlalchemy import ForeignKeyConstraint, Table, UniqueConstraint

from tests.support.processes import ROOT
from worker.models import Base

CUSTOMER = "customer_id"

_SURROGATE = (
    "a surrogate key from a global sequence, older than the rule; before distributing, the key "
    "becomes (customer_id, ...) in a migration (docs/scaling.md)"
)
_ENTRY_ID = (
    "the public entry id is globally unique today; under Citus it is unique with customer_id "
    "(ids are random, so no two customers share one)"
)
_LOT_ID = "the public lot id, as the entry id: unique with customer_id before distributing"
_BY_ENTRY = (
    "references an entry or a lot by its global id; before distributing the table gains "
    "customer_id and the reference becomes (customer_id, id)"
)

EXCEPTIONS: dict[str, str] = {
    "customers: unique (email_normalized)": (
        "one customer per email across the whole install is a business rule, not a "
        "per-customer one; before distributing it moves to a lookup table keyed by email"
    ),
    "ledger_entries: primary key (seq)": _SURROGATE,
    "ledger_entries: unique (id)": _ENTRY_ID,
    "credit_lots: primary key (seq)": _SURROGATE,
    "credit_lots: unique (id)": _LOT_ID,
    "credit_lots: unique (entry_id)": _BY_ENTRY,
    "credit_lots: foreign key (entry_id) -> ledger_entries (id)": _BY_ENTRY,
    "lot_consumptions: primary key (entry_id, lot_id)": _BY_ENTRY,
    "lot_consumptions: foreign key (entry_id) -> ledger_entries (id)": _BY_ENTRY,
    "lot_consumptions: foreign key (lot_id) -> credit_lots (id)": _BY_ENTRY,
    "lot_notices: primary key (lot_id, kind)": _BY_ENTRY,
    "lot_notices: foreign key (lot_id) -> credit_lots (id)": _BY_ENTRY,
    "wallet_charges: primary key (charge_id)": (
        "the charge id is the client-visible handle, random and globally unique; the key "
        "becomes (customer_id, charge_id) before distributing"
    ),
    "usage_events: primary key (seq)": _SURROGATE,
    "usage_events: unique (event_id)": (
        "Dodo's event ids are unique per business, and ingest deduplicates on them alone; "
        "under Citus the uniqueness is per customer (an event names its customer)"
    ),
}


def _names(columns) -> str:  # type: ignore[no-untyped-def]
    return ", ".join(c.name for c in columns)


def customer_scoped(tables: list[Table]) -> set[str]:
    """Tables with a NOT NULL customer_id, and (transitively) tables referencing them."""
    scoped = {t.name for t in tables if CUSTOMER in t.c and not t.c[CUSTOMER].nullable}
    grew = True
    while grew:
        grew = False
        for table in tables:
            if table.name in scoped:
                continue
            if any(fk.referred_table.name in scoped for fk in table.foreign_key_constraints):
                scoped.add(table.name)
                grew = True
    return scoped


def violations(tables: list[Table]) -> set[str]:
    scoped = customer_scoped(tables)
    found: set[str] = set()
    for table in tables:
        if table.name not in scoped:
            continue
        key = list(table.primary_key.columns)
        if CUSTOMER not in {c.name for c in key}:
            found.add(f"{table.name}: primary key ({_names(key)})")
        uniques = [c.columns for c in table.constraints if isinstance(c, UniqueConstraint)]
        uniques += [i.columns for i in table.indexes if i.unique]
        for columns in uniques:
            if CUSTOMER not in {c.name for c in columns}:
                found.add(f"{table.name}: unique ({_names(columns)})")
        for fk in table.constraints:
            if not isinstance(fk, ForeignKeyConstraint):
                continue
            if fk.referred_table.name not in scoped:
                continue
            pairs = {(e.parent.name, e.column.name) for e in fk.elements}
            if (CUSTOMER, CUSTOMER) not in pairs:
                local = ", ".join(e.parent.name for e in fk.elements)
                remote = ", ".join(e.column.name for e in fk.elements)
                found.add(
                    f"{table.name}: foreign key ({local}) -> {fk.referred_table.name} ({remote})"
                )
    return found


def test_customer_scoped_keys_and_references_include_customer_id() -> None:
    found = violations(list(Base.metadata.sorted_tables))
    unexplained = sorted(found - EXCEPTIONS.keys())
    assert unexplained == [], "a customer-scoped key or reference without customer_id"


def test_every_listed_exception_still_occurs() -> None:
    """A fixed exception leaves the list, so the list shows exactly what is left to fix."""
    found = violations(list(Base.metadata.sorted_tables))
    assert sorted(EXCEPTIONS.keys() - found) == []


def test_the_rule_catches_a_key_and_a_reference_without_customer_id() -> None:
    from sqlalchemy import Column, ForeignKey, Integer, MetaData, String

    metadata = MetaData()
    Table("owners", metadata, Column("customer_id", String, primary_key=True))
    Table(
        "things",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("customer_id", String, ForeignKey("owners.customer_id"), nullable=False),
    )
    Table(
        "parts",
        metadata,
        Column("customer_id", String, primary_key=True),
        Column("n", Integer, primary_key=True),
        Column("thing_id", Integer, ForeignKey("things.id"), nullable=False),
    )
    Table("lookups", metadata, Column("code", String, primary_key=True))
    assert violations(list(metadata.sorted_tables)) == {
        "things: primary key (id)",
        "parts: foreign key (thing_id) -> things (id)",
    }


def _documented_distribution() -> dict[str, str]:
    text = (ROOT / "docs" / "scaling.md").read_text()
    block = text.split("<!-- distribution:start -->")[1].split("<!-- distribution:end -->")[0]
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \|", block, re.M)
    names = [name for name, _ in rows]
    assert len(names) == len(set(names)), "a table listed twice"
    return {name: how.strip() for name, how in rows}


def test_scaling_doc_names_the_distribution_of_every_table() -> None:
    tables = list(Base.metadata.sorted_tables)
    documented = _documented_distribution()
    assert sorted(documented) == sorted(t.name for t in tables)
    by_customer = {name for name, how in documented.items() if how == "by `customer_id`"}
    assert customer_scoped(tables) <= by_customer
