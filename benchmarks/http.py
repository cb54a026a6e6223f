"""HTTP: ``POST /customers/{id}/wallets/ledger-entries`` through the Procfile's web server
(granian), driven by ``wrk``; then the server A/B (gunicorn gthread against granian).

Eight concurrent clients (``wrk -c8``, Lua script, a distinct idempotency key per request)
credit 1 cent either to a random one of the 10,000 wallets ``benchmarks.pgbench`` seeded
(spread) or to its hot wallet (hot), or debit 1 cent from a random wallet (debit spread,
spending its lot): the same shapes as the ``raw_spread``/``raw_hot``/``raw_debit_spread``
pgbench references of this run, so the ratio compares like with like. A paced, open-loop client in
separate processes then measures p99 at half the peak rate (latency counted from each
request's scheduled time, so a stall is not hidden by the client waiting).
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
    rows += server_ab(ctx)
    settings = Settings(database_url=ctx.database_url)
    with transaction(settings) as s:
        report = ledger.verify(s)
    get_engine(settings).dispose()
    if not report.ok:
        raise RuntimeError(
            "verify failed after the HTTP benchmark: " + "; ".join(report.problems[:5])
        )
    return rows


# -- server A/B ---------------------------------------------------------------------------------


def server_ab(ctx: Context) -> list[Row]:
    """gunicorn gthread against granian: same app, database, workers and threads, alternating
    which goes first in each round; each started fresh for its turn. The connections each
    worker holds are counted halfway through every turn (keep-alive spread)."""
    rounds = 1 if ctx.quick else 2
    duration = 3 if ctx.quick else 8
    shapes = (
        {"spread": SHAPES["spread"]} if ctx.quick else {k: SHAPES[k] for k in ("spread", "hot")}
    )
    environment = services.service_env(ctx)
    where = services.workdir(ctx, "server_ab")
    results: dict[tuple[str, str], list[dict]] = {}
    for n in range(rounds):
        order = services.SERVERS if n % 2 == 0 else tuple(reversed(services.SERVERS))
        for server in order:
            with services.web(
                environment, where, services.WEB_WORKERS, services.WEB_THREADS, server=server
            ) as base:
                port = base.rsplit(":", 1)[1]
                for label, (first, last, entry_type, _ref) in shapes.items():
                    script = where / f"ab_{label}.lua"
                    script.write_text(_LUA % (first, last, API_KEY, entry_type))
                    services.wrk(base, script, 1, CLIENTS)  # warm-up
                    spread: dict[int, int] = {}
                    result = services.wrk(
                        base,
                        script,
                        duration,
                        CLIENTS,
                        during=lambda p=port, out=spread: out.update(
                            services.connections_per_worker(p)
                        ),
                    )
                    result["spread"] = sorted(spread.values(), reverse=True)
                    results.setdefault((server, label), []).append(result)
    rows = []
    for (server, label), runs in results.items():
        ref = SHAPES[label][3]
        rates = sorted(r["rps"] for r in runs)
        rate = rates[len(rates) // 2] if len(rates) % 2 else sum(rates) / len(rates)
        p99s = sorted(r["p99"] for r in runs)
        load = f"wrk -c{CLIENTS} (Lua)"
        rows.append(
            Row(
                SECTION,
                f"server A/B: {server} {label}",
                rate,
                "req/s",
                reference=ref,
                ratio=ctx.ratio(rate, ref),
                note=f"{services.describe(server)}; {len(runs)} x {duration}s, "
                f"req/s {' / '.join(f'{rps:.0f}' for rps in (r['rps'] for r in runs))}; "
                f"p99 {' / '.join(f'{p:.1f}' for p in p99s)} ms; connections per worker "
                + " / ".join("-".join(map(str, r["spread"])) or "?" for r in runs)
                + f"; non-2xx {sum(r['non2xx'] for r in runs)}",
                load=load,
            )
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
  local body = '{"amount": 1, "currency": "USD", "entry_type": "%s", ' ..
    '"reason": "bench", "idempotency_key": "wrk-' .. prefix .. '-' .. counter .. '"}'
  return wrk.format("POST", "/customers/" .. id .. "/wallets/ledger-entries", headers, body)
end
"""
