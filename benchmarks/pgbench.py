"""Raw-SQL references: the ledger core's own statement, driven by ``pgbench``.

On PostgreSQL ``worker.ledger.post_entry`` (a credit without an idempotency key) sends
BEGIN; one statement that updates the wallet and inserts the entry and its credit lot
(``pg.SINGLE``); COMMIT.
``post_alone`` sends that statement alone, in autocommit (plus a check on the wallet's
low-balance state); the references keep BEGIN/COMMIT, the plain SQL way to post an entry.
The scripts below run that very SQL text (imported, so it cannot drift), with pgbench
variables where the core binds parameters; values the core computes in Python (entry id,
fingerprint, timestamp) are passed as variables too. ``-M prepared`` matches psycopg 3, which
prepares statements it sees repeatedly.

Each reference uses K=8 clients, like the Python benchmarks it is compared with:

- ``raw_spread``   one entry per transaction, a random wallet out of 10,000 (entries/s)
- ``raw_hot``      one entry per transaction, all on one hot wallet (entries/s)
- ``raw_batch100`` 100 entries per transaction over random wallets (entries/s)
- ``raw_debit_spread`` / ``raw_debit_hot`` a debit with its lot, the plain SQL way (``_DEBIT``)
- ``raw_hold_capture`` a hold and its capture, the plain SQL way: two transactions per pair
  (lock the wallet, insert the hold; lock it again, debit with its lot, mark the hold
  captured), on the real ``wallet_holds`` table and its trigger (pairs/s)
- ``core_debit`` / ``core_debit_before_holds``: the ledger-entries route's own debit statement
  (``pg.LOCK_ONE`` + ``pg.DEBIT`` as ``post_alone`` sends it) now, and as it was before holds
  (the held conditions taken out again), spread over 10,000 wallets: the cost of holds on the
  route's statement, measured in the same run
"""

from __future__ import annotations

import glob
import re
import shutil
import subprocess
from pathlib import Path

import psycopg

from benchmarks.common import Context, Row
from worker.ledger import fingerprint, pg

CLIENTS = 8
WALLETS = 10_000
# Benchmark customers are numbered so pgbench can pick one with random(): their ids are the
# decimal strings HOT_CUSTOMER, FIRST_CUSTOMER..LAST_CUSTOMER.
FIRST_CUSTOMER = 100_001
LAST_CUSTOMER = FIRST_CUSTOMER + WALLETS - 1
HOT_CUSTOMER = FIRST_CUSTOMER - 1
SECTION = "raw sql (pgbench)"
SEED_CREDIT = 1_000_000_000

# Constant parameters, passed with ``pgbench -D``; parameters the core binds as None are NULL.
CONSTANTS = {
    "currency": "USD",
    "business_id": "bus_local",
    "is_credit": "true",
    "event_type": "merchant_adjustment",
    "reason": "bench",
    "created_at": "2026-01-01T00:00:00Z",
    "key_scope": "client",
    "actor": "bench",
    "category": "paid",
    "fingerprint": fingerprint(
        currency="USD",
        amount=1,
        is_credit=True,
        event_type="merchant_adjustment",
        reason="bench",
        reference_object_id=None,
    ),
}
NULLS = ("reference_object_id", "idempotency_key", "expires_at")


def statement() -> str:
    """The core's statement with psycopg's ``%(name)s`` turned into pgbench's ``:name``."""
    sql = " ".join(pg.SINGLE[(False, False)].split())
    for name in NULLS:
        sql = sql.replace(f"%({name})s", "NULL")
    return re.sub(r"%\((\w+)\)s", r":\1", sql)


def pgbench_binary() -> str:
    found = shutil.which("pgbench") or next(
        iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/pgbench"), reverse=True)), None
    )
    if not found:
        raise RuntimeError("pgbench not found (apt-get install postgresql-client)")
    return found


def seed(ctx: Context) -> None:
    """Customers HOT, FIRST..LAST (ids are decimal strings), each with a USD wallet at 0."""
    with psycopg.connect(ctx.pg_dsn, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO customers (customer_id, business_id, email, email_normalized, name,
                                   metadata, created_at)
            SELECT id, 'bus_local', id || '@bench.invalid', id || '@bench.invalid', 'bench',
                   '{}', now()
            FROM (SELECT g::text AS id FROM generate_series(%s::int, %s::int) g) ids
            ON CONFLICT DO NOTHING
            """,
            (HOT_CUSTOMER, LAST_CUSTOMER),
        )
        conn.execute(
            """
            INSERT INTO wallets (customer_id, currency, balance, created_at, updated_at)
            SELECT customer_id, 'USD', 0, now(), now() FROM customers
            WHERE email LIKE '%%@bench.invalid'
            ON CONFLICT DO NOTHING
            """
        )
        # Every wallet starts with one credit of SEED_CREDIT and its lot, so the debit shapes
        # never run dry and verify finds the ledger, the balances and the lots equal.
        conn.execute(
            """
            WITH w AS (
                UPDATE wallets SET balance = %(credit)s
                WHERE balance = 0 AND customer_id IN (
                    SELECT customer_id FROM customers WHERE email LIKE '%%@bench.invalid')
                RETURNING customer_id
            ), e AS (
                INSERT INTO ledger_entries (id, business_id, customer_id, currency, amount,
                    is_credit, before_balance, after_balance, event_type, reason,
                    key_scope, fingerprint, created_at, actor)
                SELECT 'wle_seed_' || customer_id, 'bus_local', customer_id, 'USD',
                       %(credit)s, true, 0, %(credit)s, 'merchant_adjustment', 'seed',
                       'client', 'seed', now(), 'bench'
                FROM w RETURNING id, customer_id
            )
            INSERT INTO credit_lots (id, customer_id, currency, entry_id, amount, remaining,
                                     category, created_at)
            SELECT 'lot_seed_' || customer_id, customer_id, 'USD', id, %(credit)s,
                   %(credit)s, 'paid', now()
            FROM e
            """,
            {"credit": SEED_CREDIT},
        )
        for table in ("wallets", "customers", "ledger_entries", "credit_lots"):
            conn.execute(f"VACUUM ANALYZE {table}")


def _one_entry(pick: str) -> str:
    # A random 53-bit entry id per entry (ids are unique; a collision would fail the run).
    return (
        f"{pick}\n\\set amount random(1, 1000)\n\\set delta :amount\n"
        f"\\set id random(1, 9007199254740991)\n\\set lot_id random(1, 9007199254740991)\n"
        f"{statement()};\n"
    )


# A debit of 1 the plain SQL way with lots: lock the wallet; then, under that lock, take it
# from the first live lot in spending order, move the wallet, insert the entry and what it
# consumed, in one statement.
_DEBIT = """\\set id random(1, 9007199254740991)
SELECT balance FROM wallets WHERE customer_id = :customer_id AND currency = 'USD' FOR UPDATE;
WITH lot AS (
    SELECT id FROM credit_lots
    WHERE customer_id = :customer_id AND currency = 'USD' AND remaining > 0
      AND (expires_at IS NULL OR expires_at > now())
    ORDER BY expires_at IS NULL, expires_at, category DESC, seq LIMIT 1
), u AS (
    UPDATE credit_lots SET remaining = remaining - 1 FROM lot
    WHERE credit_lots.id = lot.id RETURNING credit_lots.id
), w AS (
    UPDATE wallets SET balance = balance - 1, updated_at = now()
    WHERE customer_id = :customer_id AND currency = 'USD' AND balance >= 1 RETURNING balance
), e AS (
    INSERT INTO ledger_entries (id, business_id, customer_id, currency, amount, is_credit,
        before_balance, after_balance, event_type, reason, key_scope, fingerprint,
        created_at, actor)
    SELECT :id, 'bus_local', :customer_id, 'USD', 1, false, w.balance + 1, w.balance,
           'merchant_adjustment', 'bench', 'client', :fingerprint, now(), 'bench'
    FROM w RETURNING id
)
INSERT INTO lot_consumptions (entry_id, lot_id, amount) SELECT e.id, u.id, 1 FROM e, u;
"""


# A hold of 5 and its capture of 1, the plain SQL way (what the holds API does per pair).
_HOLD = """\\set hid random(1, 9007199254740991)
BEGIN;
SELECT balance - held FROM wallets
WHERE customer_id = :customer_id AND currency = 'USD' FOR UPDATE;
INSERT INTO wallet_holds (customer_id, hold_id, currency, kind, amount, captured_amount,
    status, key_scope, fingerprint, expires_at, actor, created_at)
VALUES (:customer_id, 'hold_' || :hid, 'USD', 'hold', 5, 0, 'active', 'client', :fingerprint,
        now() + interval '15 minutes', 'bench', now());
COMMIT;
BEGIN;
"""
_CAPTURE = """UPDATE wallet_holds SET status = 'captured', captured_amount = 1,
    entry_id = :id, closed_at = now(), closed_by = 'bench'
WHERE customer_id = :customer_id AND hold_id = 'hold_' || :hid AND status = 'active';
COMMIT;
"""

# What the holds added to the core's debit statement (pg._DEBIT, pg._ALONE_CHECK, pg._REARM),
# taken out again for ``core_debit_before_holds``: each must be found, so this cannot drift
# silently from the statement it measures.
_HOLDS_ADDED = (
    ("balance - held + %(delta)s >= 0", "balance + %(delta)s >= 0"),
    ("\n      AND (held = 0 OR (SELECT max(running) FROM l) - held >= %(amount)s)", ""),
    (
        "balance - held + %(delta)s < %(threshold)s::bigint",
        "balance + %(delta)s < %(threshold)s::bigint",
    ),
    ("\n      AND (depleted OR balance - held + %(delta)s > 0)", ""),
    (",\n        depleted = depleted AND balance - held + %(delta)s <= 0", ""),
    (", held, depleted\n), e AS", "\n), e AS"),
    ("),\n    w.held, w.depleted\nFROM w, e", ")\nFROM w, e"),
)


def core_debit(before_holds: bool = False) -> str:
    """``post_alone``'s debit (the lock, then ``pg.DEBIT[(False, True)]``) for pgbench."""
    sql = pg.DEBIT[(False, True)]
    if before_holds:
        for added, before in _HOLDS_ADDED:
            if added not in sql:
                raise RuntimeError(f"pg.DEBIT no longer contains {added!r}")
            sql = sql.replace(added, before)
    sql = " ".join(sql.split()).replace("%(is_credit)s", "false")
    for name in (*NULLS, "threshold"):
        sql = sql.replace(f"%({name})s", "NULL")
    sql = re.sub(r"%\((\w+)\)s", r":\1", sql)
    lock = re.sub(r"%\((\w+)\)s", r":\1", " ".join(pg.LOCK_ONE.split()))
    return (
        f"\\set customer_id random({FIRST_CUSTOMER}, {LAST_CUSTOMER})\n"
        "\\set id random(1, 9007199254740991)\n\\set amount 1\n\\set delta -1\n"
        f"BEGIN;\n{lock};\n{sql};\nCOMMIT;\n"
    )


def script(kind: str) -> str:
    """The pgbench script for ``spread``, ``hot``, ``batch100``, ``debit_spread`` or
    ``debit_hot``."""
    if kind == "hold_capture":
        pick = f"\\set customer_id random({FIRST_CUSTOMER}, {LAST_CUSTOMER})\n"
        return pick + _HOLD + _DEBIT + _CAPTURE
    if kind == "core_debit":
        return core_debit()
    if kind == "core_debit_before_holds":
        return core_debit(before_holds=True)
    if kind == "debit_spread":
        body = f"\\set customer_id random({FIRST_CUSTOMER}, {LAST_CUSTOMER})\n{_DEBIT}"
    elif kind == "debit_hot":
        body = f"\\set customer_id {HOT_CUSTOMER}\n{_DEBIT}"
    elif kind == "spread":
        body = _one_entry(f"\\set customer_id random({FIRST_CUSTOMER}, {LAST_CUSTOMER})")
    elif kind == "hot":
        body = _one_entry(f"\\set customer_id {HOT_CUSTOMER}")
    elif kind == "batch100":
        # Entry i uses a wallet from the i-th hundredth of the range: every batch locks its
        # wallets in ascending order, so concurrent batches never deadlock.
        body = "".join(
            _one_entry(f"\\set customer_id {FIRST_CUSTOMER + i * 100} + random(0, 99)")
            for i in range(100)
        )
    else:
        raise ValueError(kind)
    return f"BEGIN;\n{body}COMMIT;\n"


def run_pgbench(
    ctx: Context, kind: str, seconds: int, clients: int = CLIENTS, threads: int = CLIENTS
) -> float:
    """Transactions per second of ``script(kind)`` with ``clients`` connections.

    One pgbench thread per client by default, like the K worker processes it is compared
    with: on a busy machine a thread multiplexing several connections wakes up less often
    per transaction, which would flatter the reference.
    """
    return run_script(ctx, kind, script(kind), seconds, clients, threads)


def run_script(
    ctx: Context, name: str, text: str, seconds: float, clients: int, threads: int | None = None
) -> float:
    """Transactions per second of the pgbench script ``text`` (``-M prepared``)."""
    path = Path(ctx.workdir) / f"{name}.sql"
    path.write_text(text)
    done = subprocess.run(
        [
            pgbench_binary(),
            "--no-vacuum",
            "-M",
            "prepared",
            "-c",
            str(clients),
            "-j",
            str(threads or clients),
            "-T",
            str(max(1, round(seconds))),
            "-f",
            str(path),
            *(f"-D{name}={value}" for name, value in CONSTANTS.items()),
            ctx.pg_dsn,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"pgbench {name} failed: {done.stderr.strip()[-2000:]}")
    failed = re.search(r"number of failed transactions: (\d+)", done.stdout)
    if failed and int(failed.group(1)):
        raise RuntimeError(f"pgbench {name}: {failed.group(1)} failed transactions")
    match = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", done.stdout)
    if not match:
        raise RuntimeError(f"cannot read tps from pgbench output:\n{done.stdout}")
    return float(match.group(1))


def run_references(ctx: Context) -> list[Row]:
    """Measure every reference into ``ctx.references`` and return them as rows."""
    seed(ctx)
    seconds = 2 if ctx.quick else 8
    rows = []
    kinds = (
        ("spread", 1),
        ("hot", 1),
        ("batch100", 100),
        ("debit_spread", 1),
        ("debit_hot", 1),
        ("hold_capture", 1),
        # Interleaved, twice each, so drift over the run does not favour either.
        ("core_debit_before_holds", 1),
        ("core_debit", 1),
        ("core_debit_before_holds", 1),
        ("core_debit", 1),
    )
    core: dict[str, list[float]] = {}
    for kind, per_tx in kinds:
        value = run_pgbench(ctx, kind, seconds) * per_tx
        if kind.startswith("core_"):
            core.setdefault(kind, []).append(value)
            if len(core[kind]) < 2:
                continue
            value = sum(core[kind]) / 2
            ctx.references[kind] = value
            rows.append(
                Row(
                    section=SECTION,
                    name=kind,
                    value=value,
                    unit="entries/s",
                    goal=">= 0.95x before holds" if kind == "core_debit" else "",
                    reference="core_debit_before_holds" if kind == "core_debit" else "",
                    ratio=ctx.ratio(value, "core_debit_before_holds")
                    if kind == "core_debit"
                    else None,
                    note=f"post_alone's lock + pg.DEBIT, -M prepared -c {CLIENTS}, 2 x "
                    f"{seconds}s interleaved; 10,000 wallets; runs {core[kind][0]:.0f}, "
                    f"{core[kind][1]:.0f}",
                    load="pgbench",
                )
            )
            continue
        ctx.references[f"raw_{kind}"] = value
        rows.append(
            Row(
                section=SECTION,
                name=f"raw_{kind}",
                value=value,
                unit="pairs/s" if kind == "hold_capture" else "entries/s",
                note=f"-M prepared -c {CLIENTS}, {seconds}s"
                + (
                    "; 10,000 wallets"
                    if kind.endswith("spread")
                    else "; one wallet"
                    if kind.endswith("hot")
                    else ""
                )
                + ("; a debit of 1 with its lot" if kind.startswith("debit") else ""),
                load="pgbench",
            )
        )
    return rows
