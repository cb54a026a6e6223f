"""Receiving: a verified provider delivery is stored once, before any 2xx."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from worker.config import Settings
from worker.infra.db import autocommit_first, transaction
from worker.models import InboxEvent, utcnow


def _insert_statement(dialect: str):  # type: ignore[no-untyped-def]
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    return (
        insert(InboxEvent)
        .on_conflict_do_nothing(index_elements=["provider", "provider_event_id"])
        .returning(InboxEvent.id)
    )


# Built once per dialect and executed with parameters, so SQLAlchemy compiles it once.
_INSERTS = {name: _insert_statement(name) for name in ("postgresql", "sqlite")}


def _row(provider: str, provider_event_id: str, event_type: str, payload: dict[str, Any]):  # type: ignore[no-untyped-def]
    return {
        "provider": provider,
        "provider_event_id": provider_event_id,
        "event_type": event_type,
        "payload": payload,
        "status": "pending",
        "attempts": 0,
        "received_at": utcnow(),
    }


def record_event(
    session: Session,
    *,
    provider: str,
    provider_event_id: str,
    event_type: str,
    payload: dict[str, Any],
) -> int | None:
    """Store a verified delivery; returns its id, or None when it was already stored.

    ``ON CONFLICT DO NOTHING`` on (provider, provider_event_id): concurrent duplicate deliveries
    never raise, exactly one of them inserts, and the others learn it from the empty RETURNING.
    """
    statement = _INSERTS[session.get_bind().dialect.name]
    row = _row(provider, provider_event_id, event_type, payload)
    return session.execute(statement, row).scalar()


def store_event(
    settings: Settings,
    *,
    provider: str,
    provider_event_id: str,
    event_type: str,
    payload: dict[str, Any],
) -> int | None:
    """``record_event`` in its own committed transaction, for the receiver's hot path.

    On PostgreSQL the single INSERT runs in autocommit: a statement is its own transaction,
    committed (and, with synchronous_commit, durable) before the call returns — the same
    guarantee as BEGIN/INSERT/COMMIT in one round trip instead of three.
    """
    if settings.is_sqlite:
        with transaction(settings) as session:
            return record_event(
                session,
                provider=provider,
                provider_event_id=provider_event_id,
                event_type=event_type,
                payload=payload,
            )
    row = autocommit_first(
        settings,
        _PG_INSERT_SQL,  # the same statement as _INSERTS["postgresql"], at the driver level
        {
            "provider": provider,
            "provider_event_id": provider_event_id,
            "event_type": event_type,
            "payload": json.dumps(payload, separators=(",", ":")),
        },
    )
    return None if row is None else row[0]


_PG_INSERT_SQL = (
    "INSERT INTO inbox_events"
    " (provider, provider_event_id, event_type, payload, status, attempts, received_at)"
    " VALUES (%(provider)s, %(provider_event_id)s, %(event_type)s, %(payload)s::json,"
    " 'pending', 0, now())"
    " ON CONFLICT (provider, provider_event_id) DO NOTHING RETURNING id"
)
