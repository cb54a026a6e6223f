"""HTTP: ``POST /customers/{id}/wallets/ledger-entries`` through gunicorn, driven by ``wrk``.

Eight concurrent clients (``wrk -c8``, Lua script, a distinct idempotency key per request)
credit 1 cent either to a random one of the 10,000 wallets ``benchmarks.pgbench`` seeded
(spread) or to its hot wallet (hot), or debit 1 cent from a random wallet (debit spread,
spending its lot): the same shapes as the ``raw_spread``/``raw_hot``/``raw_debit_spread``
pgbench references of this run, so the ratio compares like with like. A paced, open-loop client in
separate processes then measures p99 at half the peak rate (latency counted from each
request's scheduled time, so a stall is not hidden by the client waiting).

Holds: the same eight clients alternate ``POST .../wallets/holds`` (5 cents on a random
wallet) and ``POST .../holds/{id}/capture`` (1 cent of it) for the hold the previous answer
named: pairs per second against ``raw_hold_capture``, the same pair in plain SQL.
"""

from __future__ import annotations

from benchmarks import clients, services
from benchmarks.clients import API_KEY
from benchmarks.common import Context, Row
from benchmarks.pgbench import FIRST_CUSTOMER, HOT_CUSTOMER, LAST_CUSTOMER
from worker import ledger
from worker.config import Settings
from worker.infra.db import get_engine, transaction

SECTION = "http"
CLIENTS = 8
# label -> (first wallet, last wallet, entry type, raw reference); debits spend the lot every
# wallet was seeded with.
SHAPES = {
    "spread": (FIRST_CUSTOMER, LAST_CUSTOMER, "credit", "raw_spread"),
    "hot": (HOT_CUSTOMER, HOT_CUSTOMER, "credit", "raw_hot"),
    "debit spread": (FIRST_CUSTOMER, LAST_CUSTOMER, "debit", "raw_debit_spread"),
}


def run(ctx: Context) -> list[Row]:
    duration = 2 if ctx.quick else 12
    where = services.workdir(ctx, "http")
    base = services.shared(ctx)
    rows: list[Row] = []
    for label, (first, last, entry_type, ref) in SHAPES.items():
        script = where / f"ledger_entries_{label.replace(' ', '_')}.lua"
        script.write_text(_LUA % (first, last, API_KEY, entry_type))
        services.wrk(base, script, 1, CLIENTS)  # warm-up: imports, pools, caches
        result = services.wrk(base, script, duration, CLIENTS)
        rate = result["rps"]
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
                note=f"{services.describe()}; {duration}s; "
                f"non-2xx {result['non2xx']}, socket errors {result['errors']}",
                load=load,
            ),
            Row(SECTION, f"POST ledger-entries {label} p50", result["p50"], "ms", load=load),
            Row(SECTION, f"POST ledger-entries {label} p99", result["p99"], "ms", load=load),
        ]
        if entry_type == "debit":
            continue  # the paced latency rows are the credits'
        customer_ids = [str(n) for n in range(first, last + 1)]
        paced = clients.paced_ledger(base, customer_ids, rate / 2, duration, 2 if ctx.quick else 4)
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
    rows += _holds(ctx, base, where, duration)
    settings = Settings(database_url=ctx.database_url)
    with transaction(settings) as s:
        report = ledger.verify(s)
    get_engine(settings).dispose()
    if not report.ok:
        raise RuntimeError(
            "verify failed after the HTTP benchmark: " + "; ".join(report.problems[:5])
        )
    return rows


def _holds(ctx: Context, base: str, where, duration: int) -> list[Row]:  # type: ignore[no-untyped-def]
    script = where / "holds_capture.lua"
    script.write_text(_HOLDS_LUA % (FIRST_CUSTOMER, LAST_CUSTOMER, API_KEY))
    services.wrk(base, script, 1, CLIENTS)  # warm-up
    result = services.wrk(base, script, duration, CLIENTS)
    # Requests alternate create and capture on each connection: a pair is two requests.
    pairs = result["rps"] / 2
    load = f"wrk -c{CLIENTS} (Lua)"
    return [
        Row(
            SECTION,
            "POST hold + capture pairs spread",
            pairs,
            "pairs/s",
            goal=">= 0.5x raw",
            reference="raw_hold_capture",
            ratio=ctx.ratio(pairs, "raw_hold_capture"),
            note=f"{services.describe()}; {duration}s; requests {result['requests']}, "
            f"non-2xx {result['non2xx']}, socket errors {result['errors']}",
            load=load,
        ),
        Row(SECTION, "POST hold or capture p99", result["p99"], "ms", load=load),
    ]


# -- wrk ------------------------------------------------------------------------------------

# Each connection: create a hold, then capture the hold its answer named, and again. wrk
# gives a connection's next request() after its response(), so one pending id per thread's
# connections is kept in a queue.
_HOLDS_LUA = r"""
local first, last = %d, %d
local pending = {}
local headers = {
  ["Authorization"] = "Bearer %s",
  ["Content-Type"] = "application/json",
}

function request()
  local next_hold = table.remove(pending)
  if next_hold then
    return wrk.format("POST", "/customers/" .. next_hold[1] .. "/wallets/holds/" ..
      next_hold[2] .. "/capture", headers, '{"amount": 1}')
  end
  local id = tostring(math.random(first, last))
  local body = '{"amount": 5, "currency": "USD", "reason": "bench"}'
  return wrk.format("POST", "/customers/" .. id .. "/wallets/holds", headers, body)
end

function response(status, headers, body)
  if status == 200 and string.find(body, '"status":"active"', 1, true) then
    local hold = string.match(body, '"hold_id":"([^"]+)"')
    local customer = string.match(body, '"customer_id":"([^"]+)"')
    if hold and customer then
      table.insert(pending, {customer, hold})
    end
  end
end
"""

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
  local body = '{"amount": 1, "currency": "USD", "entry_type": "%s", ' ..
    '"reason": "bench", "idempotency_key": "wrk-' .. prefix .. '-' .. counter .. '"}'
  return wrk.format("POST", "/customers/" .. id .. "/wallets/ledger-entries", headers, body)
end
"""
