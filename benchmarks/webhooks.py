"""Payment webhooks: verified deliveries accepted per second through gunicorn, and end-to-end
credits per second until every wallet is credited (Celery worker on a private redis-server).

The load generator is ``wrk`` (a separate process, C) replaying pre-signed Standard Webhooks
requests from a file with a Lua script, so the interpreter under test does not share its CPU
with request generation beyond what the machine itself imposes. The raw-SQL reference, measured
in the same run with the same concurrency by pgbench, is the receiver's unavoidable work: one
``INSERT ... ON CONFLICT DO NOTHING`` + ``COMMIT`` per event.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select, text
from standardwebhooks import Webhook

from benchmarks import services
from benchmarks.clients import WEBHOOK_CREDIT as CREDIT
from benchmarks.clients import WEBHOOK_CUSTOMERS as CUSTOMERS
from benchmarks.clients import WEBHOOK_SECRET as SECRET
from benchmarks.clients import signed_delivery
from benchmarks.common import Context, Row
from benchmarks.pgbench import run_script
from benchmarks.support import wait_until
from worker.config import Settings
from worker.infra.db import get_engine, transaction
from worker.models import Base, InboxEvent, Wallet

CONNECTIONS = 16  # K concurrent clients
WRK_THREADS = 2

LUA = r"""
local requests = {}
local counter, step = 0, 1
local threads = 0

-- Runs in the main Lua state once per thread, before the threads start: number them.
function setup(thread)
  thread:set("index", threads)
  threads = threads + 1
end

function init(args)
  for line in io.lines(args[1]) do
    local id, ts, sig, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
    requests[#requests + 1] = wrk.format("POST", "/webhooks/dodo", {
      ["webhook-id"] = id, ["webhook-timestamp"] = ts, ["webhook-signature"] = sig,
      ["Content-Type"] = "application/json"}, body)
  end
  -- Thread i sends deliveries i, i + T, i + 2T, ...: no thread replays another's ids.
  counter, step = index, tonumber(args[2])
end

function request()
  local r = requests[(counter % #requests) + 1]
  counter = counter + step
  return r
end
"""


def _sign_requests(path: Path, count: int) -> None:
    """Pre-signed deliveries, one per line: id, timestamp, signature, body (tab separated)."""
    webhook = Webhook(SECRET)
    now = datetime.now(UTC)
    tag = uuid.uuid4().hex[:8]
    with path.open("w") as out:
        for i in range(count):
            out.write("\t".join(signed_delivery(webhook, tag, i, now)) + "\n")


def _reset(settings: Settings) -> None:
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with get_engine(settings).begin() as connection:
        # The ledger refuses TRUNCATE (migration 0014) but for a superuser skipping triggers.
        connection.execute(text("SET LOCAL session_replication_role = replica"))
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


# The receiver's unavoidable work per delivery: one committed ``INSERT ... ON CONFLICT DO
# NOTHING`` into the inbox with a payload of about the size of a real one.
_RAW_INBOX = """\\set k random(1, 9000000000000000)
INSERT INTO inbox_events (provider, provider_event_id, event_type, payload, status, attempts,
    received_at) VALUES ('raw', 'raw_' || :client_id || '_' || :k, 'payment.succeeded',
    '{"type": "payment.succeeded", "data": {"x": "%s"}}', 'pending', 0, now())
    ON CONFLICT DO NOTHING;
""" % ("y" * 900)


def run(ctx: Context) -> list[Row]:
    seconds = 2 if ctx.quick else 10
    workdir = services.workdir(ctx, "webhooks")
    settings = Settings(database_url=ctx.database_url)
    _reset(settings)

    raw = raw_inserts = run_script(ctx, "raw_inbox", _RAW_INBOX, min(seconds, 6), CONNECTIONS, 2)
    # More distinct deliveries than the receiver can take in the run, so every accepted
    # request is a new payment and the end-to-end figure measures the worker, not the file.
    unique = 3000 if ctx.quick else 15000
    _reset(settings)
    ctx.references["raw_inbox_insert"] = raw

    requests_file = workdir / "signed-requests.tsv"
    # Should the receiver outrun them, wrk wraps around: replays are still verified and
    # answered 200, as duplicates, and the note says how many distinct ids there were.
    _sign_requests(requests_file, unique)
    script = workdir / "replay.lua"
    script.write_text(LUA)

    rows: list[Row] = []
    base = services.shared(ctx)
    started = time.monotonic()
    figures = services.wrk(
        base,
        script,
        seconds,
        CONNECTIONS,
        threads=WRK_THREADS,
        script_args=(str(requests_file), str(WRK_THREADS)),
    )
    accepted = figures["requests"] - figures["non2xx"] - figures["errors"]
    accepted_per_s = accepted / figures["seconds"]

    def count() -> int:
        with transaction(settings) as s:
            return s.scalar(select(func.count()).select_from(InboxEvent))

    # wrk stops with requests still in flight; the server finishes them after it returns.
    # Count once the inbox has stopped growing for a second.
    stored, previous = count(), -1
    while stored != previous:
        time.sleep(1)
        previous, stored = stored, count()

    def drained() -> bool:
        with transaction(settings) as s:
            return not s.scalar(
                select(func.count()).select_from(InboxEvent).where(InboxEvent.status == "pending")
            )

    wait_until(drained, timeout=600, interval=0.2, what="the worker to drain the inbox")
    e2e_seconds = time.monotonic() - started

    with transaction(settings) as s:
        credited = s.scalar(select(func.coalesce(func.sum(Wallet.balance), 0)))
    if credited != stored * CREDIT:
        raise RuntimeError(f"wallets hold {credited}, expected {stored * CREDIT}")
    load = f"wrk -c{CONNECTIONS} (Lua, pre-signed)"
    rows += [
        Row(
            "webhooks",
            "raw INSERT ON CONFLICT + COMMIT",
            raw_inserts,
            "inserts/s",
            note=f"reference: the receiver's own write; -c {CONNECTIONS}",
            load="pgbench",
        ),
        Row(
            "webhooks",
            "verified webhooks accepted/s",
            accepted_per_s,
            "req/s",
            goal=">= 1000/s",
            reference="raw_inbox_insert",
            ratio=ctx.ratio(accepted_per_s, "raw_inbox_insert"),
            note=f"{services.describe()}; "
            f"{figures['non2xx']} non-2xx; {unique} distinct ids, replays count as duplicates",
            load=load,
        ),
        Row("webhooks", "receiver p99", figures["p99"], "ms", load=load),
        Row("webhooks", "receiver p50", figures["p50"], "ms", load=load),
        Row(
            "webhooks",
            "end-to-end credits/s (all wallets credited)",
            stored / e2e_seconds,
            "credits/s",
            goal="keeps up (= accepted/s)",
            reference="raw_inbox_insert",
            ratio=ctx.ratio(stored / e2e_seconds, "raw_inbox_insert"),
            note=f"{stored} payments, {CUSTOMERS} customers, "
            f"{e2e_seconds:.1f}s from first request to empty inbox "
            f"({figures['seconds']:.1f}s of requests)",
            load=load,
        ),
    ]
    if "raw_spread" in ctx.references:  # the ledger benchmark's reference, when it ran first
        rows[-1].note += f"; ledger raw_spread {ctx.references['raw_spread']:.0f}/s"
    return rows
