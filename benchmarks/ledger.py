"""Ledger core throughput from K=8 separate processes, each with its own engine.

- ``post_alone``: one entry as a transaction of its own (what the HTTP API does): one
  autocommitted statement. The goal is judged on these rows.
- ``post_entry``: an entry inside the caller's ``transaction()`` (BEGIN, the statement,
  COMMIT, and the Session's work), one per transaction or 100 per transaction (``batch100``).
- the "floor": the statement with BEGIN/COMMIT from bare psycopg, no SQLAlchemy.

All run on the wallets ``benchmarks.pgbench`` seeded. In a full run each figure is paired
with a pgbench run of the same statement started just before it (see ``run``), so a change in
the machine's load between the two is small.
"""

from __future__ import annotations

import multiprocessing as mp
import random
import time
from collections.abc import Callable
from statistics import median
from typing import Any

from benchmarks.common import Context, Row
from benchmarks.pgbench import CLIENTS, FIRST_CUSTOMER, HOT_CUSTOMER, LAST_CUSTOMER, run_pgbench

SECTION = "ledger core"
# post_alone (one entry as its own transaction, as the HTTP API posts) measured on the same
# shapes as post_entry (an entry in the caller's transaction); kind -> raw shape.
ALONE = {"alone spread": "spread", "alone hot": "hot"}
# Debits through post_own (how the HTTP API posts one): lock, read the lots, one write.
DEBITS = {"debit spread": "debit_spread", "debit hot": "debit_hot"}
GOAL = ">= 0.7x raw"
WARMUP = 20


def _wallet_for(kind: str, rng: random.Random, slot: int = 0) -> str:
    if kind == "hot":
        return str(HOT_CUSTOMER)
    if kind == "batch100":
        # Entry i of a batch uses a wallet from the i-th hundredth of the range: every batch
        # locks wallets in ascending order, so concurrent batches never deadlock.
        return str(FIRST_CUSTOMER + slot * 100 + rng.randrange(100))
    return str(rng.randint(FIRST_CUSTOMER, LAST_CUSTOMER))


_psycopg: dict[str, Any] = {}


def _post_raw_psycopg(settings: Any, rng: random.Random) -> int:
    """The floor for any Python client: the core's statement on a bare psycopg connection."""
    import psycopg

    from worker import ledger
    from worker.ledger import pg
    from worker.ledger.posting import statement_values

    conn = _psycopg.get("conn")
    if conn is None:
        dsn = settings.database_url.replace("postgresql+psycopg://", "postgresql://")
        conn = _psycopg["conn"] = psycopg.connect(dsn)
    leg = ledger.Leg(
        customer_id=_wallet_for("spread", rng),
        currency="USD",
        amount=rng.randint(1, 1000),
        is_credit=True,
        reason="bench",
    )
    with conn.transaction():
        conn.execute(pg.SINGLE[(False, False)], statement_values(settings, leg)).fetchone()
    return 1


def _post_transaction(settings: Any, kind: str, rng: random.Random) -> int:
    from worker import ledger
    from worker.infra.db import transaction

    if kind == "psycopg":
        return _post_raw_psycopg(settings, rng)
    if kind in DEBITS:
        ledger.post_own(
            settings,
            ledger.Leg(
                customer_id=_wallet_for(kind.split()[1], rng),
                currency="USD",
                amount=1,
                is_credit=False,
                reason="bench",
            ),
        )
        return 1
    if kind in ALONE:
        posted = ledger.post_alone(
            settings,
            ledger.Leg(
                customer_id=_wallet_for(ALONE[kind], rng),
                currency="USD",
                amount=rng.randint(1, 1000),
                is_credit=True,
                reason="bench",
            ),
        )
        if posted is None:  # would silently measure nothing
            raise RuntimeError("post_alone declined a plain credit")
        return 1
    per_tx = 100 if kind == "batch100" else 1
    with transaction(settings) as session:
        for slot in range(per_tx):
            ledger.post_entry(
                session,
                customer_id=_wallet_for(kind, rng, slot),
                currency="USD",
                amount=rng.randint(1, 1000),
                is_credit=True,
                reason="bench",
            )
    return per_tx


def _worker(
    url: str, plan: list[tuple[str, int]], seed: int, gos: list[Any], finished: list[Any], out: Any
) -> None:
    from worker.config import Settings

    settings = Settings(database_url=url)
    rng = random.Random(seed)
    try:
        for i, ((kind, transactions), go) in enumerate(zip(plan, gos, strict=True)):
            warm = "spread" if kind == "batch100" else kind
            for _ in range(WARMUP):  # connect, prepare statements, fill caches
                _post_transaction(settings, warm, rng)
            out.put(("ready", seed))
            go.wait(120)
            start, cpu = time.monotonic(), time.process_time()
            entries = sum(_post_transaction(settings, kind, rng) for _ in range(transactions))
            out.put(("done", entries, start, time.monotonic(), time.process_time() - cpu))
            # Warm up for the next shape only once every worker is done with this one.
            finished[i].wait(600)
    except BaseException as exc:
        out.put(("error", repr(exc)))


def measure_plan(
    ctx: Context, plan: list[tuple[str, int]], before: Callable[[int], None] | None = None
) -> list[tuple[float, float]]:
    """For each (kind, transactions per worker) in turn, from the same K=CLIENTS processes:
    entries/s, and the client CPU milliseconds each entry cost (Python, SQLAlchemy, psycopg).
    Every shape starts when all workers are warm and ready (one start signal per shape);
    ``before(i)`` runs just before shape i starts, while the workers wait idle."""
    spawn = mp.get_context("spawn")
    gos, out = [spawn.Event() for _ in plan], spawn.Queue()
    finished = [spawn.Event() for _ in plan]
    procs = [
        spawn.Process(target=_worker, args=(ctx.database_url, plan, i, gos, finished, out))
        for i in range(CLIENTS)
    ]
    for p in procs:
        p.start()

    def receive(timeout: float) -> tuple:
        message = out.get(timeout=timeout)
        if message[0] == "error":
            raise RuntimeError(f"ledger worker failed: {message[1]}")
        return message

    figures = []
    ready = 0  # "ready" for the next shape can arrive before the last "done" of this one
    try:
        for i, go in enumerate(gos):
            while ready < CLIENTS:
                if receive(120)[0] == "ready":
                    ready += 1
            ready = 0
            if before is not None:
                before(i)
            go.set()
            results = []
            while len(results) < CLIENTS:
                message = receive(600)
                if message[0] == "ready":
                    ready += 1
                else:
                    results.append(message)
            finished[i].set()
            entries = sum(r[1] for r in results)
            elapsed = max(r[3] for r in results) - min(r[2] for r in results)
            figures.append((entries / elapsed, 1000 * sum(r[4] for r in results) / entries))
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.terminate()
    return figures


def run(ctx: Context) -> list[Row]:
    # The machine is shared: its load can double or halve the raw figure from one minute to
    # the next. So in a full run each shape is measured in rounds, pgbench immediately
    # followed by the Python workers, and the ratio is the median of the per-round ratios.
    # --quick measures spread and hot once each against the run's references.
    rounds = 0 if ctx.quick else 2
    seconds = 5
    plans = (
        {"alone spread": 100, "alone hot": 60, "spread": 60, "hot": 40, "debit spread": 60}
        if ctx.quick
        else {
            "psycopg": 200,
            "alone spread": 300,
            "alone hot": 150,
            "spread": 200,
            "hot": 100,
            "batch100": 3,
            "debit spread": 200,
            "debit hot": 100,
        }
    )
    rows = []
    # One set of worker processes measures every shape of every round (process start-up
    # would otherwise be most of the cost). In a full run each shape is preceded by its own
    # pgbench run while the workers wait idle; --quick uses the run's references.
    sequence = [(kind, n) for _ in range(max(1, rounds)) for kind, n in plans.items()]
    raws_at: list[float] = []

    def paired_reference(i: int) -> None:
        kind = sequence[i][0]
        raw_kind = _raw_kind(kind)
        per_tx = 100 if kind == "batch100" else 1
        if rounds:
            raws_at.append(run_pgbench(ctx, raw_kind, seconds) * per_tx)
        else:
            raws_at.append(ctx.references[f"raw_{raw_kind}"])

    figures = measure_plan(ctx, sequence, paired_reference)
    for kind, transactions in plans.items():
        raw_kind = _raw_kind(kind)
        per_tx = 100 if kind == "batch100" else 1
        picked = [i for i, (k, _) in enumerate(sequence) if k == kind]
        raws = [raws_at[i] for i in picked]
        values = [figures[i][0] for i in picked]
        cpus = [figures[i][1] for i in picked]
        ratio = median(v / r for v, r in zip(values, raws, strict=True))
        paired = (
            f"paired raw median {median(raws):.0f}/s over {rounds} round(s)"
            if rounds
            else "vs the run's reference"
        )
        note = (
            f"{CLIENTS} procs x {transactions} tx of {per_tx}; {paired}; "
            f"client CPU {median(cpus):.2f} ms/entry"
        )
        if kind == "psycopg":
            # Not a goal: how far a bare psycopg client gets, to tell Python's own share of the
            # gap from SQLAlchemy's and the ledger's.
            name, goal, note = "floor: bare psycopg spread", "", "same SQL, no SQLAlchemy; " + note
        elif kind in ALONE:
            # The ledger core's path for an entry that is a transaction of its own (the HTTP
            # API's): the goal is judged here.
            name, goal = f"post_alone {ALONE[kind]}", GOAL
        elif kind in DEBITS:
            name, goal = f"post_own {kind} (with lots)", ""
        else:
            name, goal = f"post_entry {kind} (in the caller's transaction)", ""
        rows.append(
            Row(
                section=SECTION,
                name=name,
                value=median(values),
                unit="entries/s",
                goal=goal,
                reference=f"raw_{raw_kind}",
                ratio=ratio,
                note=note,
                load=f"process pool ({CLIENTS})",
            )
        )
    rows.append(_verify(ctx))
    return rows


def _raw_kind(kind: str) -> str:
    return "spread" if kind == "psycopg" else ALONE.get(kind) or DEBITS.get(kind, kind)


def _verify(ctx: Context) -> Row:
    """The benchmark's own writes must leave the ledger exactly consistent."""
    from worker import ledger
    from worker.config import Settings
    from worker.infra.db import transaction

    with transaction(Settings(database_url=ctx.database_url)) as session:
        report = ledger.verify(session)
    if not report.ok:
        raise RuntimeError("verify failed after the benchmark: " + "; ".join(report.problems[:5]))
    return Row(SECTION, "verify after run", report.entries, "entries", note="OK: no drift")
