"""Payment webhooks: verified deliveries accepted per second through gunicorn, and end-to-end
credits per second until every wallet is credited (Celery worker on a private redis-server).

The load generator is ``wrk`` (a separate process, C) replaying pre-signed Standard Webhooks
requests from a file with a Lua script, so the interpreter under test does not share its CPU
with request generation beyond what the machine itself imposes. The raw-SQL reference, measured
in the same run with the same concurrency, is the receiver's unavoidable work: one
``INSERT ... ON CONFLICT DO NOTHING`` + ``COMMIT`` per event over psycopg.
"""

from __future__ import annotations

import json
import multiprocessing
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from sqlalchemy import func, select, text
from standardwebhooks import Webhook

from benchmarks import services
from benchmarks.common import Context, Row
from tests.support import wait_until
from worker.config import Settings
from worker.db import get_engine, transaction
from worker.models import Base, InboxEvent, Wallet

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
CREDIT = 100
CUSTOMERS = 500
CONNECTIONS = 16  # K concurrent clients
WEB_WORKERS = 2  # one per core
WEB_THREADS = 8  # threads overlap the database and broker round trips of a request

LUA = r"""
local requests = {}
local counter = 0

function init(args)
  for line in io.lines(args[1]) do
    local id, ts, sig, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
    requests[#requests + 1] = wrk.format("POST", "/webhooks/dodo", {
      ["webhook-id"] = id, ["webhook-timestamp"] = ts, ["webhook-signature"] = sig,
      ["Content-Type"] = "application/json"}, body)
  end
  -- Each wrk thread starts at its own offset so threads do not replay each other's ids.
  counter = (tonumber(args[2]) or 0)
end

function request()
  counter = counter + 1
  return requests[(counter % #requests) + 1]
end
"""


def signed_delivery(webhook: Webhook, tag: str, i: int, now: datetime) -> tuple[str, str, str, str]:
    """One signed ``payment.succeeded`` delivery: (webhook-id, timestamp, signature, body)."""
    customer = i % CUSTOMERS
    body = json.dumps(
        {
            "business_id": "bus_local",
            "type": "payment.succeeded",
            "timestamp": now.isoformat(),
            "data": {
                "payment_id": f"pay_{tag}_{i}",
                "total_amount": CREDIT,
                "currency": "USD",
                "customer": {
                    "customer_id": f"cus_bench_{customer}",
                    "email": f"bench{customer}@example.com",
                    "name": f"Bench {customer}",
                },
                "metadata": {"wallet_credit": str(CREDIT)},
                "product_cart": [],
            },
        },
        separators=(",", ":"),
    )
    msg_id = f"msg_{tag}_{i}"
    return msg_id, str(int(now.timestamp())), webhook.sign(msg_id, now, body), body


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
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


def _raw_insert_worker(args: tuple[str, int, float]) -> float:
    dsn, worker, seconds = args
    done = 0
    payload = json.dumps({"type": "payment.succeeded", "data": {"x": "y" * 900}})
    with psycopg.connect(dsn) as conn:
        # The clock starts once connected: process start-up is not part of the reference.
        started = time.monotonic()
        deadline = started + seconds
        while time.monotonic() < deadline:
            with conn.transaction():
                conn.execute(
                    "INSERT INTO inbox_events (provider, provider_event_id, event_type, payload,"
                    " status, attempts, received_at) VALUES ('raw', %s, 'payment.succeeded',"
                    " %s, 'pending', 0, now()) ON CONFLICT DO NOTHING",
                    (f"raw_{worker}_{done}", payload),
                )
            done += 1
    return done / (time.monotonic() - started)


def raw_inbox_inserts_per_second(dsn: str, clients: int, seconds: float) -> float:
    """The reference: K psycopg clients, one committed ON CONFLICT insert per event."""
    with multiprocessing.get_context("spawn").Pool(clients) as pool:
        rates = pool.map(_raw_insert_worker, [(dsn, w, seconds) for w in range(clients)])
    return sum(rates)


def run(ctx: Context) -> list[Row]:
    seconds = 2 if ctx.quick else 15
    workdir = services.workdir(ctx, "webhooks")
    settings = Settings(database_url=ctx.database_url)
    _reset(settings)

    raw = raw_inserts = raw_inbox_inserts_per_second(ctx.pg_dsn, CONNECTIONS, min(seconds, 6))
    # --quick signs only a few hundred distinct deliveries (the replays after them are still
    # verified and answered 200, as duplicates), so draining the inbox stays short.
    unique = 300 if ctx.quick else max(5000, int(3000 * seconds))
    _reset(settings)
    ctx.references["raw_inbox_insert"] = raw

    requests_file = workdir / "signed-requests.tsv"
    # Enough unique deliveries for the run at well above the goal; wrk wraps around after that
    # (replays then count as duplicates, still verified and answered 200).
    _sign_requests(requests_file, unique)
    script = workdir / "replay.lua"
    script.write_text(LUA)

    rows: list[Row] = []
    env = services.env(ctx, DODO_WEBHOOK_SECRET=SECRET, INBOX_SWEEP_SECONDS="30")
    with services.celery(env, workdir, concurrency=2):
        with services.web(env, workdir, workers=WEB_WORKERS, threads=WEB_THREADS) as base:
            started = time.monotonic()
            figures = services.wrk(
                base, script, seconds, CONNECTIONS, script_args=(str(requests_file),)
            )
        accepted = figures["requests"] - figures["non2xx"] - figures["errors"]
        accepted_per_s = accepted / figures["seconds"]
        with transaction(settings) as s:
            stored = s.scalar(select(func.count()).select_from(InboxEvent))

        def drained() -> bool:
            with transaction(settings) as s:
                return not s.scalar(
                    select(func.count())
                    .select_from(InboxEvent)
                    .where(InboxEvent.status == "pending")
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
            note=f"reference: the receiver's own write; {CONNECTIONS} psycopg clients",
            load="process pool",
        ),
        Row(
            "webhooks",
            "verified webhooks accepted/s",
            accepted_per_s,
            "req/s",
            goal=">= 1000/s",
            reference="raw_inbox_insert",
            ratio=ctx.ratio(accepted_per_s, "raw_inbox_insert"),
            note=f"gunicorn {WEB_WORKERS} gthread x{WEB_THREADS}, Celery worker running; "
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
            note=f"{stored} payments, {CUSTOMERS} customers, Celery concurrency 2, "
            f"{e2e_seconds:.1f}s from first request to empty inbox",
            load=load,
        ),
    ]
    if "raw_spread" in ctx.references:  # the ledger benchmark's reference, when it ran first
        rows[-1].note += f"; ledger raw_spread {ctx.references['raw_spread']:.0f}/s"
    return rows
