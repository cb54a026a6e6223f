"""A separate OS process that debits one wallet many times (tests/ledger/test_concurrency.py).

``python -m tests.support.hammer DATABASE_URL CUSTOMER_ID AMOUNTS GO_FILE [IDEMPOTENCY_KEY]``

AMOUNTS is a comma-separated list of debits; each runs in its own transaction through
``worker.ledger.post_entry``. The process waits for GO_FILE to exist so that every hammer
starts at once, then prints one JSON object: the amounts debited and the refusals with the
balance each refusal reported.
"""

from __future__ import annotations

import json
import os
import sys
import time

from worker import ledger
from worker.config import Settings
from worker.errors import DuplicateEntry, InsufficientBalance
from worker.infra.db import transaction


def main(argv: list[str]) -> None:
    url, customer_id, amounts, go_file = argv[:4]
    key = argv[4] if len(argv) > 4 else None
    # DATABASE_POOLER as the service reads it (the test's PgBouncer backend sets it).
    settings = Settings(database_url=url, database_pooler=os.environ.get("DATABASE_POOLER", ""))
    deadline = time.monotonic() + 60
    while not os.path.exists(go_file):
        if time.monotonic() > deadline:
            raise SystemExit("never told to go")
        time.sleep(0.01)
    debited: list[int] = []
    refused: list[list[int]] = []
    duplicates = 0
    for amount in map(int, amounts.split(",")):
        try:
            with transaction(settings) as s:
                ledger.post_entry(
                    s,
                    customer_id=customer_id,
                    currency="USD",
                    amount=amount,
                    is_credit=False,
                    event_type="usage",
                    idempotency_key=key,
                )
            debited.append(amount)
        except InsufficientBalance as exc:
            refused.append([amount, exc.balance])
        except DuplicateEntry:
            duplicates += 1
    print(json.dumps({"debited": debited, "refused": refused, "duplicates": duplicates}))


if __name__ == "__main__":
    main(sys.argv[1:])
