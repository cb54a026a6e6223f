"""HTTP: ``POST /customers/{id}/wallets/ledger-entries`` through gunicorn, driven by ``wrk``.

Eight concurrent clients (``wrk -c8``, Lua script, a distinct idempotency key per request)
credit 1 cent either to a random one of the 10,000 wallets ``benchmarks.pgbench`` seeded
(spread) or to its hot wallet (hot): the same shape as the ``raw_spread``/``raw_hot`` pgbench
references of this run, so the ratio compares like with like. A paced, open-loop client in
separate processes then measures p99 at half the peak rate (latency counted from each
request's scheduled time, so a stall is not hidden by the client waiting).
"""

from __future__ import annotations

import http.client
import json
import multiprocessing
import os
import time

from benchmarks import services
from benchmarks.common import Context, Row
from benchmarks.pgbench import FIRST_CUSTOMER, HOT_CUSTOMER, LAST_CUSTOMER
from worker import ledger
from worker.config import Settings
from worker.db import get_engine, transaction

SECTION = "http"
API_KEY = "bench-http-key"
CLIENTS = 8
SHAPES = {"spread": (FIRST_CUSTOMER, LAST_CUSTOMER), "hot": (HOT_CUSTOMER, HOT_CUSTOMER)}


def run(ctx: Context) -> list[Row]:
    duration = 2 if ctx.quick else 12
    where = services.workdir(ctx, "http")
    workers = int(os.environ.get("BENCH_HTTP_WORKERS", 2 * (os.cpu_count() or 1) + 1))
    threads = 2
    env = services.env(ctx, BILLING_API_KEY=API_KEY)
    rows: list[Row] = []
    with services.web(env, where, workers=workers, threads=threads) as base:
        for label, (first, last) in SHAPES.items():
            script = where / f"ledger_entries_{label}.lua"
            script.write_text(_LUA % (first, last, API_KEY))
            services.wrk(base, script, 1, CLIENTS)  # warm-up: imports, pools, caches
            result = services.wrk(base, script, duration, CLIENTS)
            rate = result["rps"]
            ref = f"raw_{label}"
            load = f"wrk -c{CLIENTS} (Lua)"
            rows += [
                Row(
                    SECTION,
                    f"POST ledger-entries {label}",
                    rate,
                    "req/s",
                    goal=">= 0.5x raw",
                    reference=ref,
                    ratio=ctx.ratio(rate, ref),
                    note=f"gunicorn {workers} gthread x{threads}; {duration}s; "
                    f"non-2xx {result['non2xx']}, socket errors {result['errors']}",
                    load=load,
                ),
                Row(SECTION, f"POST ledger-entries {label} p50", result["p50"], "ms", load=load),
                Row(SECTION, f"POST ledger-entries {label} p99", result["p99"], "ms", load=load),
            ]
            customer_ids = [str(n) for n in range(first, last + 1)]
            paced = _paced(base, customer_ids, rate / 2, duration, 2 if ctx.quick else 4)
            rows.append(
                Row(
                    SECTION,
                    f"POST ledger-entries {label} p99 at half peak",
                    paced["p99"],
                    "ms",
                    goal="< 50 ms",
                    note=f"open loop at {rate / 2:.0f} req/s (achieved {paced['rps']:.0f}); "
                    f"p50 {paced['p50']:.1f} ms; non-2xx {paced['errors']}",
                    load=f"process pool ({2 if ctx.quick else 4}, paced)",
                )
            )
    settings = Settings(database_url=ctx.database_url)
    with transaction(settings) as s:
        report = ledger.verify(s)
    get_engine(settings).dispose()
    if not report.ok:
        raise RuntimeError(
            "verify failed after the HTTP benchmark: " + "; ".join(report.problems[:5])
        )
    return rows


# -- wrk ------------------------------------------------------------------------------------

_LUA = r"""
local first, last = %d, %d
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
  local id = tostring(math.random(first, last))
  local body = '{"amount": 1, "currency": "USD", "entry_type": "credit", ' ..
    '"reason": "bench", "idempotency_key": "wrk-' .. prefix .. '-' .. counter .. '"}'
  return wrk.format("POST", "/customers/" .. id .. "/wallets/ledger-entries", headers, body)
end
"""


# -- paced, open-loop client (separate processes) ------------------------------------------


def _paced(
    base: str, customer_ids: list[str], rate: float, duration: int, processes: int
) -> dict[str, float]:
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
                "entry_type": "credit",
                "reason": "bench",
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
