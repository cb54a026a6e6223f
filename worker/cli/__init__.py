"""``billing-worker``: the operator CLI.

Errors a user can cause print one line on stderr and exit with status 2; never a traceback.
"""

from __future__ import annotations

import sys

import click
from sqlalchemy.exc import OperationalError

from worker.cli import (
    apikeys,
    audit,
    charges,
    core,
    dbrole,
    events,
    holds,
    lots,
    notifications,
    reports,
    serve,
    usage,
)
from worker.config import ConfigError
from worker.errors import BillingError


@click.group()
def cli() -> None:
    """Operate a billing-worker: wallets, ledger, webhooks inbox, usage, notifications."""
    from tasks import publisher
    from worker.notify import commit_hooks

    commit_hooks.install()  # balance changes made here get their checks and notifications
    publisher.install()


for command in (
    core.db,
    core.customers,
    core.wallet,
    core.ledger_group,
    core.verify,
    apikeys.apikeys,
    audit.audit,
    serve.serve,
    events.events,
    notifications.endpoints,
    notifications.notifications,
    notifications.tasks,
    usage.usage_group,
    reports.report,
):
    cli.add_command(command)
# wallet charge|...|charge-show, lots, hold|capture|release|holds
for command in [*charges.COMMANDS, lots.wallet_lots, *holds.COMMANDS]:
    core.wallet.add_command(command)
core.db.add_command(dbrole.db_grants)
core.ledger_group.add_command(reports.ledger_export)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    try:
        code = cli.main(args=argv, prog_name="billing-worker", standalone_mode=False)
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.exceptions.Abort:
        _fail("aborted")
    except click.ClickException as exc:
        _fail(exc.format_message())
    except (BillingError, ConfigError) as exc:
        _fail(str(exc))
    except OperationalError as exc:
        _fail(f"database unavailable: {str(exc.orig).strip().splitlines()[0]}", code=1)
    sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, code: int = 2) -> None:
    click.echo(f"billing-worker: {message}", err=True)
    sys.exit(code)
