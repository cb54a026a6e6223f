"""One stress-test worker process: applies inbox batches until the inbox is drained and the
test says no more events are coming, then prints what it did as one JSON line.

``python -m tests.support.inbox_stress DATABASE_URL DONE_FILE BATCH_SIZE SECONDS [POOLER]``.
It calls the same function the Celery task does (``worker.inbox.process_pending``, one
transaction per batch) and counts every database error by SQLSTATE instead of retrying
blindly: the test asserts there was no deadlock (40P01) at all. After SECONDS it gives up and
says so (``gave_up``).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError

from worker import inbox
from worker.config import Settings
from worker.infra.db import transaction
from worker.models import InboxEvent


def main(
    database_url: str, done_file: str, batch_size: int, seconds: float, pooler: str = ""
) -> dict[str, object]:
    settings = Settings(database_url=database_url, database_pooler=pooler)
    applied, batches, errors = 0, 0, {}  # type: ignore[var-annotated]
    done = Path(done_file)
    give_up = time.monotonic() + seconds
    while time.monotonic() < give_up:
        try:
            with transaction(settings) as session:
                batch = inbox.process_pending(session, batch_size)
        except DBAPIError as exc:
            code = getattr(exc.orig, "sqlstate", None) or type(exc.orig).__name__
            errors[code] = errors.get(code, 0) + 1
            continue
        batches += 1
        applied += sum(o.applied for o in batch.outcomes)
        if batch.outcomes:
            continue
        if done.exists():
            with transaction(settings) as session:
                pending = session.scalar(
                    select(func.count())
                    .select_from(InboxEvent)
                    .where(InboxEvent.status == "pending", InboxEvent.error.is_(None))
                )
            if not pending:
                return {"applied": applied, "batches": batches, "errors": errors}
        time.sleep(0.005)
    return {"applied": applied, "batches": batches, "errors": errors, "gave_up": True}


if __name__ == "__main__":
    args = sys.argv[1:]
    print(json.dumps(main(args[0], args[1], int(args[2]), float(args[3]), *args[4:])))
