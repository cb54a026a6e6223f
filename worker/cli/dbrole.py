"""``billing-worker db grants ROLE``: the GRANTs of the least-privilege service role."""

from __future__ import annotations

import click

from worker.config import get_settings
from worker.errors import ValidationFailed
from worker.infra.db import get_engine
from worker.infra.dbrole import grants_for


@click.command("grants")
@click.argument("role")
def db_grants(role: str) -> None:
    """Print the SQL that lets ROLE run the service on DATABASE_URL's database and no more:
    no UPDATE, DELETE or TRUNCATE of ledger entries. Run it as the tables' owner after every
    upgrade (see docs/database-role.md); it changes nothing itself."""
    settings = get_settings()
    if settings.is_sqlite:
        raise ValidationFailed("DATABASE_URL", "database roles are PostgreSQL's; SQLite has none")
    with get_engine(settings).connect() as connection:
        for statement in grants_for(connection, role):
            click.echo(f"{statement};")
