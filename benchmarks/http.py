"""HTTP: ``POST /customers/{id}/wallets/ledger-entries`` through gunicorn, driven by ``wrk``.

Eight concurrent clients (``wrk -c8``, Lua script, a distinct idempotency key per request)
debit 1 cent either from many customers (spread) or from one customer (hot). Printed next to the
raw-SQL rate of the same transaction shape (pgbench, 8 clients) from the ledger benchmark
(``raw_spread``/``raw_hot``) or, when that did not run, measured here. A paced, open-loop client
in separate processes then measures p99 at half the peak rate (latency counted from each
request's scheduled time, so a stall is not hidden by the client waiting).
"""

from __future__ import annotations

import http.client
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from benchmarks.common import Context, Row
from tests.support import gunicorn, process_env
from worker import ledger
from worker.config import Settings
from worker.db import get_engine, transaction

SECTION = "http"
API_KEY = "bench-http-key"
CLIENTS = 8
SPREAD_CUSTOMERS = 1000
FUNDS = 10**12  # minor units per wallet: never runs out during a run


def run(ctx: Context) -> list[Row]:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (apt-get install -y wrk)")
    duration = 5 if ctx.quick else 15
    workdir = Path(ctx.workdir) / "http"
    workdir.mkdir(parents=True, exist_ok=True)
    settings = Settings(database_url=ctx.database_url)
    ids = _seed(settings)
    get_engine(settings).dispose()

    refs = _references(ctx, workdir, duration)
    workers = int(os.environ.get("BENCH_HTTP_WORKERS", 2 * (os.cpu_count() or 1) + 1))
    # gthread keeps connections alive (sync closes each one and lingers for the client's FIN);
    # on this machine it measured ~40% more req/s than the Procfile's default sync workers.
    extra = os.environ.get("BENCH_HTTP_GUNICORN_ARGS", "--worker-class gthread --threads 2")
    env = process_env(DATABASE_URL=ctx.database_url, BILLING_API_KEY=API_KEY)
    rows: list[Row] = []
    with gunicorn(env, workdir, workers=workers, extra=extra.split()) as base:
        for label, customer_ids, ref in (
            ("spread", ids, refs["spread"]),
            ("hot", ids[:1], refs["hot"]),
        ):
            _wrk(base, customer_ids, workdir, 2)  # warm-up: imports, pools, caches
            result = _wrk(base, customer_ids, workdir, duration)
            rate = result["rps"]
            rows += [
                Row(
                    SECTION,
                    f"ledger-entries req/s {label} (wrk -c{CLIENTS}, {workers} workers {extra})",
                    rate,
                    "req/s",
                    goal=">= 0.5x raw",
                    reference=ref,
                    ratio=ctx.ratio(rate, ref),
                    note=f"non-2xx: {result['errors']}",
                ),
                Row(SECTION, f"ledger-entries p50 {label}", result["p50"], "ms"),
                Row(SECTION, f"ledger-entries p99 {label}", result["p99"], "ms"),
            ]
            paced = _paced(base, customer_ids, rate / 2, duration)
            rows.append(
                Row(
                    SECTION,
                    f"ledger-entries p99 {label} at half peak ({rate / 2:.0f} req/s)",
                    paced["p99"],
                    "ms",
                    note=f"p50 {paced['p50']:.1f} ms, achieved {paced['rps']:.0f} req/s, "
                    f"non-2xx {paced['errors']}",
                )
            )
    with transaction(settings) as s:
        report = ledger.verify(s)
    rows.append(
        Row(SECTION, "ledger verify after the run", float(len(report.problems)), "problems")
    )
    get_engine(settings).dispose()
    return rows


# -- setup ----------------------------------------------------------------------------------


def _seed(settings: Settings) -> list[str]:
    """Funded customers ``cus_bench_1..N`` (created once per database)."""
    ids = [f"cus_bench_{n}" for n in range(1, SPREAD_CUSTOMERS + 1)]
    with transaction(settings) as s:
        for n, customer_id in enumerate(ids, 1):
            _, created = ledger.create_customer(
                s, email=f"bench{n}@example.com", name=f"Bench {n}", customer_id=customer_id
            )
            if created:
                ledger.post_entry(
                    s, customer_id=customer_id, currency="USD", amount=FUNDS, is_credit=True
                )
    return ids


# -- raw-SQL reference ----------------------------------------------------------------------

# The statements the view runs for one keyed debit: the key lookup, the conditional balance
# update, the entry insert, in one transaction. pgbench runs them with 8 clients.
_PGBENCH = r"""
\set n random(1, {customers})
\set k random(1, 9000000000000000)
BEGIN;
SELECT id FROM ledger_entries WHERE customer_id = 'cus_bench_' || :n
    AND idempotency_key = 'raw-' || :client_id || '-' || :k;
UPDATE wallets SET balance = balance - 1, updated_at = now()
    WHERE customer_id = 'cus_bench_' || :n AND currency = 'USD' AND balance >= 1
    RETURNING balance AS after \gset
INSERT INTO ledger_entries (id, business_id, customer_id, currency, amount, is_credit,
    before_balance, after_balance, event_type, idempotency_key, fingerprint, created_at)
    VALUES ('raw_' || :client_id || '_' || :k, 'bus_local', 'cus_bench_' || :n, 'USD', 1, false,
    :after + 1, :after, 'merchant_adjustment', 'raw-' || :client_id || '-' || :k,
    md5(:k::text), now());
COMMIT;
"""


def _references(ctx: Context, workdir: Path, duration: int) -> dict[str, str]:
    """Reference keys for the ratio column: the ledger benchmark's, else measured here."""
    keys = {"spread": "raw_spread", "hot": "raw_hot"}
    for label, customers in (("spread", SPREAD_CUSTOMERS), ("hot", 1)):
        if keys[label] in ctx.references:
            continue
        script = workdir / f"raw_{label}.sql"
        script.write_text(_PGBENCH.format(customers=customers))
        args = ["pgbench", "-n", "-c", str(CLIENTS), "-j", "2", "-T", str(duration)]
        output = subprocess.run(
            [*args, "-f", str(script), ctx.pg_dsn],
            capture_output=True,
            text=True,
            check=True,
            timeout=duration + 60,
        ).stdout
        tps = float(re.search(r"tps = ([\d.]+)", output).group(1))
        keys[label] = f"http_raw_{label}"
        ctx.references[keys[label]] = tps
        print(f"[http] raw SQL {label} (pgbench -c{CLIENTS}): {tps:.0f} tx/s")
    return keys


# -- wrk ------------------------------------------------------------------------------------

_LUA = r"""
local ids = {%s}
local counter = 0
local prefix = ""
local headers = {
  ["Authorization"] = "Bearer %s",
  ["Content-Type"] = "application/json",
}

function setup(thread)
  thread:set("tag", tostring(math.random(1, 1000000000)) .. "-" .. tostring(os.time()))
end

function init(args)
  prefix = tag
  math.randomseed(os.time() + #tag)
end

function request()
  counter = counter + 1
  local id = ids[math.random(1, #ids)]
  local body = '{"amount": 1, "currency": "USD", "entry_type": "debit", ' ..
    '"reason": "bench", "idempotency_key": "wrk-' .. prefix .. '-' .. counter .. '"}'
  return wrk.format("POST", "/customers/" .. id .. "/wallets/ledger-entries", headers, body)
end
"""


def _wrk(base: str, customer_ids: list[str], workdir: Path, duration: int) -> dict[str, float]:
    script = workdir / "ledger_entries.lua"
    script.write_text(_LUA % (", ".join(f'"{c}"' for c in customer_ids), API_KEY))
    output = subprocess.run(
        ["wrk", "-t2", f"-c{CLIENTS}", f"-d{duration}s", "--latency", "-s", str(script), base],
        capture_output=True,
        text=True,
        check=True,
        timeout=duration + 60,
    ).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: (.*)", output)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "p50": _ms(re.search(r"^\s+50%\s+(\S+)", output, re.M).group(1)),
        "p99": _ms(re.search(r"^\s+99%\s+(\S+)", output, re.M).group(1)),
        "errors": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else "",
    }


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


# -- paced, open-loop client (separate processes) ------------------------------------------


def _paced(base: str, customer_ids: list[str], rate: float, duration: int) -> dict[str, float]:
    processes = 4
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes) as pool:
        parts = pool.starmap(
            _paced_worker,
            [(base, customer_ids, rate / processes, duration, i) for i in range(processes)],
        )
    latencies = sorted(latency for part, _ in parts for latency in part)
    errors = sum(e for _, e in parts)
    if not latencies:
        return {"p50": float("nan"), "p99": float("nan"), "rps": 0.0, "errors": errors}
    return {
        "p50": latencies[len(latencies) // 2],
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "rps": len(latencies) / duration,
        "errors": errors,
    }


def _paced_worker(
    base: str, customer_ids: list[str], rate: float, duration: int, worker: int
) -> tuple[list[float], int]:
    """Send at ``rate`` req/s on a fixed schedule; latency from the scheduled send time."""
    import random

    host, port = base.removeprefix("http://").split(":")
    interval = 1.0 / rate
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    latencies: list[float] = []
    errors = 0
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    start = time.perf_counter() + 0.2
    for n in range(int(rate * duration)):
        scheduled = start + n * interval
        delay = scheduled - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        body = json.dumps(
            {
                "amount": 1,
                "currency": "USD",
                "entry_type": "debit",
                "idempotency_key": f"paced-{os.getpid()}-{worker}-{n}-{time.time_ns()}",
            }
        )
        customer_id = random.choice(customer_ids)
        try:
            connection.request(
                "POST", f"/customers/{customer_id}/wallets/ledger-entries", body, headers
            )
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                errors += 1
            if response.getheader("Connection", "").lower() == "close":
                connection.close()
        except (OSError, http.client.HTTPException):
            errors += 1
            connection.close()
            connection = http.client.HTTPConnection(host, int(port), timeout=30)
            continue
        latencies.append((time.perf_counter() - scheduled) * 1000)
    connection.close()
    return latencies, errors


if __name__ == "__main__":  # standalone: python -m benchmarks.http
    import sys
    import tempfile

    from tests.support import create_pg_database, drop_pg_database
    from worker import migrate

    name, url = create_pg_database("bw_bench_http")
    try:
        migrate.upgrade(Settings(database_url=url))
        with tempfile.TemporaryDirectory() as tmp:
            context = Context(
                quick="--quick" in sys.argv,
                database_url=url,
                pg_dsn=f"host=127.0.0.1 port=5432 user=root dbname={name}",
                redis_url="redis://127.0.0.1:6379/0",
                workdir=tmp,
            )
            for row in run(context):
                ratio = f"  {row.ratio:.2f}x {row.reference}" if row.ratio else ""
                print(f"{row.name:<60} {row.value:>10.1f} {row.unit:<10}{ratio}  {row.note}")
            print("references:", {k: round(v) for k, v in context.references.items()})
    finally:
        from worker.db import dispose_engines

        dispose_engines()
        drop_pg_database(name)
