"""A separate OS process that works on one wallet's holds (tests/holds/test_holds_processes.py).

``python -m tests.support.hold_hammer DATABASE_URL MODE CUSTOMER_ID ARG GO_FILE THREADS``

MODE is ``hold`` (ARG: the amount; each thread asks for one hold), ``capture`` (ARG:
``hold_id:amount``, each thread captures it), ``debit`` (ARG: comma-separated amounts, one
debit each, in order, per thread) or ``expire`` (the ``release-expired-holds`` job, once per
thread). Each thread runs its operation in its own transaction. The process waits for
GO_FILE, so that every process starts at once, then prints one JSON object: what each thread
got (``ok`` with the hold's status and captured amount, or the error's code).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any

from worker import jobs, ledger
from worker.config import Settings
from worker.errors import BillingError
from worker.infra.db import transaction
from worker.ledger import holds
from worker.notify import commit_hooks


def _one(settings: Settings, mode: str, customer_id: str, arg: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if mode == "expire":
        return [{"ok": jobs.release_expired_holds(settings)}]
    if mode == "debit":
        for amount in map(int, arg.split(",")):
            try:
                with transaction(settings) as s:
                    ledger.post_entry(
                        s,
                        customer_id=customer_id,
                        currency="USD",
                        amount=amount,
                        is_credit=False,
                    )
                out.append({"ok": amount})
            except BillingError as exc:
                out.append({"error": exc.code})
        return out
    try:
        with transaction(settings) as s:
            if mode == "hold":
                outcome = holds.create_hold(
                    s, customer_id=customer_id, currency="USD", amount=int(arg), actor="hammer"
                )
            else:
                hold_id, amount = arg.split(":")
                outcome = holds.capture_hold(
                    s, customer_id=customer_id, hold_id=hold_id, amount=int(amount), actor="h"
                )
            assert outcome.hold is not None
            out.append(
                {
                    "ok": outcome.hold.status,
                    "hold_id": outcome.hold.hold_id,
                    "captured": outcome.hold.captured_amount,
                    "replayed": outcome.replayed,
                }
            )
    except BillingError as exc:
        out.append({"error": exc.code})
    return out


def main(argv: list[str]) -> None:
    url, mode, customer_id, arg, go_file, threads = argv[:6]
    settings = Settings(database_url=url)
    commit_hooks.install()  # as every process of the service does
    deadline = time.monotonic() + 60
    while not os.path.exists(go_file):
        if time.monotonic() > deadline:
            raise SystemExit("never told to go")
        time.sleep(0.005)
    results: list[list[dict[str, Any]]] = [[] for _ in range(int(threads))]

    def run(i: int) -> None:
        try:
            results[i] = _one(settings, mode, customer_id, arg)
        except Exception as exc:  # reported, so the test shows it instead of losing a thread
            results[i] = [{"error": f"{type(exc).__name__}: {exc}"[:300]}]

    pool = [threading.Thread(target=run, args=(i,)) for i in range(int(threads))]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    print(json.dumps([r for rs in results for r in rs]))


if __name__ == "__main__":
    main(sys.argv[1:])
