"""0011: stored keys keep what they could do (admin -> admin; others -> read, customers,
debit, credit), and a downgrade gives ``is_admin`` back. SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import text

from tests.support.processes import create_pg_database, drop_pg_database
from worker.access import apikeys
from worker.config import Settings
from worker.infra import migrate
from worker.infra.db import get_engine


@pytest.fixture
def empty_settings(backend: str, tmp_path: Path) -> Iterator[Settings]:
    """Settings for a brand-new, empty database on ``backend``."""
    if backend == "sqlite":
        yield Settings(database_url=f"sqlite:///{tmp_path / 'fresh.db'}")
        return
    name, url = create_pg_database("bw_m11")
    try:
        yield Settings(database_url=url)
    finally:
        get_engine(Settings(database_url=url)).dispose()
        drop_pg_database(name)


# The revision before 0011, wherever the chain puts it.
BEFORE = ScriptDirectory.from_config(migrate.alembic_config()).get_revision("0011").down_revision

# Secrets shaped like the ones we issue (anything else is refused without a lookup).
KEYS = {  # id: (secret, is_admin, revoked)
    "key_ops": ("bwk_" + "o" * 43, True, False),
    "key_backend": ("bwk_" + "b" * 43, False, False),
    "key_old": ("bwk_" + "x" * 43, False, True),
}


def test_existing_keys_keep_what_they_could_do_and_downgrade_restores_is_admin(
    empty_settings: Settings,
) -> None:
    migrate.upgrade(empty_settings, BEFORE)
    with get_engine(empty_settings).begin() as conn:
        for key_id, (secret, is_admin, revoked) in KEYS.items():
            conn.execute(
                text(
                    "INSERT INTO api_keys (id, name, key_hash, is_admin, created_at, revoked_at)"
                    " VALUES (:id, :id, :hash, :admin, CURRENT_TIMESTAMP,"
                    + (" CURRENT_TIMESTAMP)" if revoked else " NULL)")
                ),
                {"id": key_id, "hash": apikeys.hash_key(secret), "admin": is_admin},
            )
    migrate.upgrade(empty_settings)
    with get_engine(empty_settings).connect() as conn:
        granted = conn.execute(
            text("SELECT key_id, scope FROM api_key_scopes ORDER BY key_id, scope")
        ).all()
        actors = dict(conn.execute(text("SELECT id, created_by FROM api_keys")).all())
        revoked_by = dict(conn.execute(text("SELECT id, revoked_by FROM api_keys")).all())
    assert sorted(granted) == sorted(
        [("key_ops", "admin")]
        + [
            (k, s)
            for k in ("key_backend", "key_old")
            for s in ("credit", "customers", "debit", "read")
        ]
    )
    assert set(actors.values()) == {"unknown"}
    assert revoked_by == {"key_ops": None, "key_backend": None, "key_old": "unknown"}
    ops = apikeys.authenticate(empty_settings, "bwk_" + "o" * 43)
    backend = apikeys.authenticate(empty_settings, "bwk_" + "b" * 43)
    assert ops.is_admin and not backend.is_admin
    assert backend.scopes == frozenset({"read", "customers", "debit", "credit"})
    assert apikeys.authenticate(empty_settings, "bwk_" + "x" * 43) is None
    get_engine(empty_settings).dispose()

    migrate.downgrade(empty_settings, BEFORE)
    with get_engine(empty_settings).connect() as conn:
        admins = dict(conn.execute(text("SELECT id, is_admin FROM api_keys")).all())
    assert {k: bool(v) for k, v in admins.items()} == {
        "key_ops": True,
        "key_backend": False,
        "key_old": False,
    }
