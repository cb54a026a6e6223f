"""Run Alembic migrations programmatically (no alembic.ini needed)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, inspect

from worker.config import Settings, get_settings
from worker.infra.db import get_engine

MIGRATIONS = Path(__file__).parent.parent / "migrations"


def alembic_config(settings: Settings | None = None) -> Config:
    settings = settings or get_settings()
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", settings.database_url.replace("%", "%%"))
    return config


def upgrade(settings: Settings | None = None, revision: str = "head") -> None:
    config = alembic_config(settings)
    with get_engine(settings).begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


# The revision that creates ledger_entries: downgrading past it drops the ledger.
LEDGER_REVISION = "0001"


class DowngradeRefused(Exception):
    """A downgrade that would destroy what it must not, or names no revision it can find.
    Nothing was changed."""


def downgrade(
    settings: Settings | None = None, revision: str = "base", *, drop_ledger: bool = False
) -> None:
    """Revert migrations down to ``revision`` (a revision id, or ``base``).

    Refuses (``DowngradeRefused``) to revert ``LEDGER_REVISION`` while ledger_entries holds a
    row unless ``drop_ledger``: the ledger is the record of every balance and has no other
    copy. The check and the downgrade are one transaction, and on PostgreSQL the table is
    locked against writes first, so no entry can arrive between the two.
    """
    config = alembic_config(settings)
    drops_ledger = _reverts(config, revision, LEDGER_REVISION)
    with get_engine(settings).begin() as connection:
        if drops_ledger and not drop_ledger:
            entries = _ledger_entries(connection)
            if entries:
                raise DowngradeRefused(
                    f"downgrading to {revision} drops the ledger, which holds {entries} "
                    "entries; pass --drop-ledger to destroy them"
                )
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def _reverts(config: Config, target: str, revision: str) -> bool:
    """Whether downgrading to ``target`` reverts ``revision``: unless it is ``target`` or one
    of its ancestors."""
    if target == "base":
        return True
    script = ScriptDirectory.from_config(config)
    try:
        found = script.get_revision(target)
    except CommandError as exc:
        raise DowngradeRefused(f"revision: {exc}") from None
    if found is None:  # pragma: no cover - get_revision raises for unknown names
        return True
    return revision not in {r.revision for r in script.iterate_revisions(found.revision, "base")}


def _ledger_entries(connection: Connection) -> int:
    if not inspect(connection).has_table("ledger_entries"):
        return 0
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql("LOCK TABLE ledger_entries IN SHARE MODE")
    return int(connection.exec_driver_sql("SELECT count(*) FROM ledger_entries").scalar() or 0)


def heads() -> list[str]:
    return list(ScriptDirectory.from_config(alembic_config()).get_heads())
