"""Faults around the webhook pipeline: broker down, worker SIGKILLed mid-batch, database down."""

from __future__ import annotations

import signal
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from tests.support.processes import (
    celery_worker,
    free_port,
    gunicorn,
    process_env,
    redis_server,
    stop,
    wait_until,
)
from tests.support.webhooks import (
    DODO_SECRET,
    dodo_headers,
    dodo_payment,
    dumps,
    migrated_pg_database,
    post_dodo,
    stack_env,
    status_counts,
    wait_processed,
)
from worker import inbox, ledger
from worker.config import Settings
from worker.infra.celery_app import make_celery
from worker.infra.db import transaction
from worker.models import LedgerEntry, Wallet

pytestmark = pytest.mark.slow


def _payments(count: int, amount: int = 100) -> list[dict]:
    tag = uuid.uuid4().hex[:8]
    return [
        dodo_payment(
            payment_id=f"pay_{tag}_{i}",
            customer_id=f"cus_{tag}_{i % 10}",
            email=f"{tag}.{i % 10}@example.com",
            wallet_credit=amount,
        )
        for i in range(count)
    ]


def _assert_each_credited_once(settings: Settings, count: int, amount: int) -> None:
    with transaction(settings) as s:
        entries = s.scalar(select(func.count()).select_from(LedgerEntry))
        total = s.scalar(select(func.sum(Wallet.balance)))
        assert (entries, total) == (count, count * amount)
        assert ledger.verify(s).ok


def _worker_args(tmp: Path) -> list[str]:
    return ["--beat", "--schedule", str(tmp / "beat-schedule")]


def test_broker_down_still_2xx_then_sweeper_applies(tmp_path: Path) -> None:
    dead_broker = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    with migrated_pg_database() as settings, redis_server(tmp_path) as (redis_url, _):
        with gunicorn(stack_env(settings, dead_broker), tmp_path) as base:
            payments = _payments(10)
            responses = [post_dodo(base, p) for p in payments]
        assert {r.status_code for r in responses} == {200}
        assert status_counts(settings) == {"pending": 10}
        # A worker on a live broker: nothing was ever queued, the beat sweeper finds the rows.
        env = stack_env(settings, redis_url, INBOX_SWEEP_SECONDS="1")
        worker = celery_worker(env, tmp_path, extra=_worker_args(tmp_path))
        try:
            wait_processed(settings, 10, timeout=60)
        finally:
            stop(worker)
        assert status_counts(settings) == {"processed": 10}
        _assert_each_credited_once(settings, 10, 100)


def _store_and_enqueue(settings: Settings, redis_url: str, payloads: list[dict]) -> None:
    """What the receiver does per delivery (insert, commit, send), without HTTP: this test is
    about the worker, and a quick batch keeps it short."""
    celery = make_celery(settings.with_overrides(broker_url=redis_url))
    with transaction(settings) as s:
        ids = [
            inbox.record_event(
                s,
                provider="dodo",
                provider_event_id=f"msg_{p['data']['payment_id']}",
                event_type=p["type"],
                payload=p,
            )
            for p in payloads
        ]
    with celery.connection_for_write() as connection, celery.producer_or_acquire() as producer:
        del connection
        for event_id in ids:
            celery.send_task("tasks.inbox.process_event", args=[event_id], producer=producer)


def test_worker_sigkilled_mid_batch_applies_every_event_once(tmp_path: Path) -> None:
    count = 200
    with migrated_pg_database() as settings, redis_server(tmp_path) as (redis_url, _):
        env = stack_env(settings, redis_url, INBOX_SWEEP_SECONDS="2")
        _store_and_enqueue(settings, redis_url, _payments(count))
        worker = celery_worker(env, tmp_path, concurrency=2)
        wait_until(
            lambda: status_counts(settings).get("processed", 0) >= 20,
            timeout=60,
            what="the worker to get going",
        )
        stop(worker, sig=signal.SIGKILL)  # the whole process group, mid-batch
        assert status_counts(settings).get("pending", 0) > 0  # really mid-batch
        # Un-acked messages stay invisible in Redis for an hour; the sweeper re-sends them.
        worker = celery_worker(env, tmp_path, concurrency=2, extra=_worker_args(tmp_path))
        try:
            wait_processed(settings, count, timeout=90)
        finally:
            stop(worker)
        assert status_counts(settings) == {"processed": count}
        _assert_each_credited_once(settings, count, 100)


@pytest.mark.parametrize(
    "database_url",
    [
        pytest.param(lambda: f"postgresql+psycopg://root@127.0.0.1:{free_port()}/x", id="refused"),
        # Non-routable: the connect either times out (connect_timeout=5) or fails at once.
        pytest.param(lambda: "postgresql+psycopg://root@10.255.255.1:5432/x", id="unreachable"),
    ],
)
def test_database_down_is_503(tmp_path: Path, database_url) -> None:
    env = process_env(
        DATABASE_URL=database_url(),
        DODO_WEBHOOK_SECRET=DODO_SECRET,
        CELERY_BROKER_URL=f"redis://127.0.0.1:{free_port()}/0",
    )
    with gunicorn(env, tmp_path, workers=1) as base:
        body = dumps(dodo_payment())
        response = httpx.post(
            base + "/webhooks/dodo", content=body, headers=dodo_headers(body), timeout=30
        )
    assert response.status_code == 503
    assert response.json()["code"] == "DATABASE_UNAVAILABLE"
    assert response.headers["Retry-After"]
