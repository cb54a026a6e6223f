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
import re
import shutil
import subprocess
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from sqlalchemy import func, select, text
from standardwebhooks import Webhook

from benchmarks.common import Context, Row
from tests.support import celery_worker, gunicorn, process_env, redis_server, stop, wait_until
from worker.config import Settings
from worker.db import get_engine, transaction
from worker.models import Base, InboxEvent, Wallet

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
CREDIT = 100
CUSTOMERS = 500
CONNECTIONS = 16  # K concurrent clients
WEB_WORKERS = 2  # one per core
# Threads overlap the database and broker round trips, which dominate a request.
WEB_EXTRA = ["--worker-class", "gthread", "--threads", "8"]

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

function done(summary, latency, requests)
  io.write(string.format(
    "RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d errors=%d non2xx=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
"""


def _sign_requests(path: Path, count: int) -> None:
    """Pre-signed deliveries, one per line: id, timestamp, signature, body (tab separated)."""
    webhook = Webhook(SECRET)
    now = datetime.now(UTC)
    tag = uuid.uuid4().hex[:8]
    with path.open("w") as out:
        for i in range(count):
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
            signature = webhook.sign(msg_id, now, body)
            out.write(f"{msg_id}\t{int(now.timestamp())}\t{signature}\t{body}\n")


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


def _wrk(base: str, requests_file: Path, script: Path, seconds: int) -> dict[str, int]:
    binary = shutil.which("wrk")
    if binary is None:
        raise RuntimeError("wrk not found: apt-get install -y wrk")
    result = subprocess.run(
        [
            binary,
            "-t2",
            f"-c{CONNECTIONS}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            base,
            "--",
            str(requests_file),
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    )
    match = re.search(r"RESULT (.*)", result.stdout)
    if match is None:
        raise RuntimeError(f"wrk printed no result: {result.stdout}\n{result.stderr}")
    return {k: int(v) for k, v in (pair.split("=") for pair in match.group(1).split())}


def run(ctx: Context) -> list[Row]:
    seconds = 8 if ctx.quick else 20
    workdir = Path(ctx.workdir) / "webhooks"
    workdir.mkdir(parents=True, exist_ok=True)
    settings = Settings(database_url=ctx.database_url)
    _reset(settings)

    raw = raw_inserts = raw_inbox_inserts_per_second(ctx.pg_dsn, CONNECTIONS, min(seconds, 8))
    _reset(settings)
    ctx.references["raw_inbox_insert"] = raw

    requests_file = workdir / "signed-requests.tsv"
    # Enough unique deliveries for the run at well above the goal; wrk wraps around after that
    # (replays then count as duplicates, still verified and answered 200).
    _sign_requests(requests_file, max(5000, int(3000 * seconds)))
    script = workdir / "replay.lua"
    script.write_text(LUA)

    rows: list[Row] = []
    with redis_server(workdir) as (redis_url, _):
        env = process_env(
            DATABASE_URL=ctx.database_url,
            CELERY_BROKER_URL=redis_url,
            DODO_WEBHOOK_SECRET=SECRET,
            INBOX_SWEEP_SECONDS="30",
        )
        worker = celery_worker(env, workdir, concurrency=2, extra=["--loglevel", "WARNING"])
        try:
            with gunicorn(env, workdir, workers=WEB_WORKERS, extra=WEB_EXTRA) as base:
                started = time.monotonic()
                figures = _wrk(base, requests_file, script, seconds)
            accepted = figures["requests"] - figures["non2xx"] - figures["errors"]
            accepted_per_s = accepted / (figures["duration_us"] / 1e6)
            with transaction(settings) as s:
                stored = s.scalar(select(func.count()).select_from(InboxEvent))

            def drained() -> bool:
                with transaction(settings) as s:
                    return not s.scalar(
                        select(func.count())
                        .select_from(InboxEvent)
                        .where(InboxEvent.status == "pending")
                    )

            wait_until(drained, timeout=600, interval=0.5, what="the worker to drain the inbox")
            e2e_seconds = time.monotonic() - started
        finally:
            stop(worker)

    with transaction(settings) as s:
        credited = s.scalar(select(func.coalesce(func.sum(Wallet.balance), 0)))
    if credited != stored * CREDIT:
        raise RuntimeError(f"wallets hold {credited}, expected {stored * CREDIT}")
    rows += [
        Row(
            "webhooks",
            "raw INSERT ON CONFLICT + COMMIT/s",
            raw_inserts,
            "inserts/s",
            note=f"{CONNECTIONS} psycopg clients (reference)",
        ),
        Row(
            "webhooks",
            "verified webhooks accepted/s",
            accepted_per_s,
            "req/s",
            goal=">= 1000/s",
            reference="raw_inbox_insert",
            ratio=ctx.ratio(accepted_per_s, "raw_inbox_insert"),
            note=f"wrk -c{CONNECTIONS}, gunicorn {WEB_WORKERS}x8 gthread, Celery worker running; "
            f"{figures['non2xx']} non-2xx",
        ),
        Row("webhooks", "receiver p99", figures["p99_us"] / 1000, "ms", goal="milliseconds"),
        Row("webhooks", "receiver p50", figures["p50_us"] / 1000, "ms"),
        Row(
            "webhooks",
            "end-to-end credits/s (all wallets credited)",
            stored / e2e_seconds,
            "credits/s",
            reference="raw_inbox_insert",
            ratio=ctx.ratio(stored / e2e_seconds, "raw_inbox_insert"),
            note=f"{stored} payments, {CUSTOMERS} customers, Celery concurrency 2, "
            f"{e2e_seconds:.1f}s from first request to empty inbox",
        ),
    ]
    if "raw_spread" in ctx.references:  # the ledger benchmark's reference, when it ran first
        rows[-1].note += f"; ledger raw_spread {ctx.references['raw_spread']:.0f}/s"
    return rows


if __name__ == "__main__":  # python -m benchmarks.webhooks: a standalone quick run
    import tempfile

    from tests.support import create_pg_database, drop_pg_database
    from worker import migrate

    name, url = create_pg_database("bw_bench_webhooks")
    try:
        migrate.upgrade(Settings(database_url=url))
        with tempfile.TemporaryDirectory() as tmp:
            context = Context(
                quick=True,
                database_url=url,
                pg_dsn=f"host=127.0.0.1 port=5432 user=root dbname={name}",
                redis_url="",
                workdir=tmp,
            )
            for row in run(context):
                ratio = f"  {row.ratio:.2f}x raw" if row.ratio else ""
                print(f"{row.name:<46} {row.value:>10.1f} {row.unit:<10}{ratio}  {row.note}")
    finally:
        from worker.db import dispose_engines

        dispose_engines()
        drop_pg_database(name)
