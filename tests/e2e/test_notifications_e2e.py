"""End to end with the Procfile's processes: gunicorn, a Celery worker and beat on a private
redis-server, PostgreSQL, and a local receiver verifying every signed delivery."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from tests.support.cli import run_cli
from tests.support.processes import (
    celery_worker,
    create_pg_database,
    drop_pg_database,
    free_port,
    gunicorn,
    process_env,
    redis_server,
    spawn,
    stop,
    wait_until,
)
from tests.support.receiver import Receiver, start_receiver
from worker import ledger
from worker.config import Settings
from worker.infra import migrate
from worker.infra.db import dispose_engines, transaction
from worker.models import DeliveryAttempt, OutboxMessage

SCAN_SECONDS = 2  # beat's low-balance scan interval in this module's stack

pytestmark = pytest.mark.slow

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
API_KEY = "e2e-admin-key-0123456789abcdefghijklmn"


@dataclass
class Stack:
    base: str
    env: dict[str, str]
    settings: Settings
    receiver: Receiver
    metrics_port: int
    tmp: Path

    def api(self, method: str, path: str, key: str = API_KEY, **kw) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"}
        return httpx.request(method, self.base + path, headers=headers, timeout=10, **kw)

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "worker", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def cli_here(self, *args: str) -> str:
        """Run a CLI command in this process (no subprocess start-up) against the stack's DB."""
        result = run_cli(self.env["DATABASE_URL"], *args)
        assert result.code == 0, result.err
        return result.out

    def messages(self, event_type: str) -> list[OutboxMessage]:
        with transaction(self.settings) as s:
            rows = s.scalars(select(OutboxMessage).where(OutboxMessage.event_type == event_type))
            return list(rows)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """web + worker + beat + redis + PostgreSQL + receiver, configured with short timings."""
    tmp = tmp_path_factory.mktemp("notify-e2e")
    name, url = create_pg_database()
    settings = Settings(database_url=url)
    migrate.upgrade(settings)
    receiver, server = start_receiver()
    receiver.secrets["/default"] = SECRET
    (tmp / "prom").mkdir()
    metrics_port = free_port()
    try:
        with redis_server(tmp) as (redis_url, _):
            env = process_env(
                DATABASE_URL=url,
                CELERY_BROKER_URL=redis_url,
                BILLING_API_KEY=API_KEY,
                LOW_BALANCE_THRESHOLDS="USD=1000",
                LOW_BALANCE_SCAN_SECONDS=str(SCAN_SECONDS),
                NOTIFY_WEBHOOK_URL=receiver.url + "/default",
                NOTIFY_WEBHOOK_SECRET=SECRET,
                # The receiver listens on loopback, which notifications may not reach unless
                # allowed; endpoint secrets are sealed with this run's key.
                ALLOW_PRIVATE_WEBHOOK_URLS="127.0.0.0/8",
                ENDPOINT_SECRET_KEY=Fernet.generate_key().decode(),
                NOTIFY_RETRY_SCHEDULE="1,1,1",
                NOTIFY_DISPATCH_SECONDS="1",
                PROMETHEUS_MULTIPROC_DIR=str(tmp / "prom"),
                WORKER_METRICS_PORT=str(metrics_port),
            )
            worker = celery_worker(env, tmp, concurrency=2)
            beat = spawn(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "worker",
                    "beat",
                    "--loglevel",
                    "INFO",
                    "--schedule",
                    str(tmp / "beat-schedule"),
                ],
                env,
                tmp / "celery-beat.log",
            )
            try:
                with gunicorn(env, tmp, extra=["-c", "python:worker.gunicorn_conf"]) as base:
                    settings = settings.with_overrides(
                        low_balance_thresholds="USD=1000",
                        notify_webhook_url=receiver.url + "/default",
                        notify_webhook_secret=SECRET,
                        allow_private_webhook_urls=env["ALLOW_PRIVATE_WEBHOOK_URLS"],
                        endpoint_secret_key=env["ENDPOINT_SECRET_KEY"],
                    )
                    yield Stack(base, env, settings, receiver, metrics_port, tmp)
            finally:
                stop(beat)
                stop(worker)
    finally:
        server.shutdown()
        dispose_engines()
        drop_pg_database(name)


def _customer(stack: Stack, email: str) -> str:
    response = stack.api("POST", "/customers", json={"email": email, "name": "E2E"})
    assert response.status_code == 200, response.text
    return response.json()["customer_id"]


def _entry(stack: Stack, cid: str, amount: int, entry_type: str) -> dict:
    response = stack.api(
        "POST",
        f"/customers/{cid}/wallets/ledger-entries",
        json={"amount": amount, "currency": "USD", "entry_type": entry_type},
    )
    assert response.status_code == 200, response.text
    return response.json()


def _state(stack: Stack, cid: str) -> str:
    with transaction(stack.settings) as s:
        return ledger.get_wallet(s, cid, "USD").low_state


def test_crossing_debit_delivers_one_verified_balance_low(stack: Stack) -> None:
    added = stack.cli("endpoints", "add", stack.receiver.url + "/ep", "--events",
                      "wallet.balance_low,wallet.balance_recovered", "--json")  # fmt: skip
    assert added.returncode == 0, added.stderr
    stack.receiver.secrets["/ep"] = json.loads(added.stdout)["secret"]
    stack.receiver.failures[("/ep", "wallet.balance_low")] = 2  # 503, 503, then 200

    cid = _customer(stack, "crossing@example.com")
    _entry(stack, cid, 5000, "credit")
    wait_until(lambda: _state(stack, cid) == "normal", what="wallet armed by the worker")
    _entry(stack, cid, 4500, "debit")  # 500 < 1000

    (low,) = stack.receiver.wait_for("/default", "wallet.balance_low")
    assert low.verified
    data = low.payload["data"]
    assert (data["customer_id"], data["currency"], data["balance"], data["threshold"]) == (
        cid,
        "USD",
        500,
        1000,
    )
    assert data["ledger_entry_id"].startswith("wle_")
    assert low.payload["business_id"] == "bus_local"

    # The endpoint failed twice: retried on the 1 s schedule, same webhook-id, then delivered.
    (ok,) = stack.receiver.wait_for("/ep", "wallet.balance_low", timeout=30)
    tries = stack.receiver.of("/ep", "wallet.balance_low", status=None)
    assert [t.status for t in tries] == [503, 503, 200]
    assert all(t.verified for t in tries)
    assert len({t.webhook_id for t in tries}) == 1 and ok.webhook_id != low.webhook_id

    def attempts() -> list[int | None]:
        with transaction(stack.settings) as s:
            return s.scalars(
                select(DeliveryAttempt.status_code)
                .where(DeliveryAttempt.message_id == ok.webhook_id)
                .order_by(DeliveryAttempt.id)
            ).all()

    wait_until(lambda: len(attempts()) == 3, what="the delivery log")
    assert attempts() == [503, 503, 200]

    # More debits while low: nothing more. A credit above: one recovery, to both.
    _entry(stack, cid, 100, "debit")
    _entry(stack, cid, 100, "debit")
    _entry(stack, cid, 2000, "credit")  # 2300
    stack.receiver.wait_for("/default", "wallet.balance_recovered")
    stack.receiver.wait_for("/ep", "wallet.balance_recovered")
    # Every ledger entry was announced to NOTIFY_WEBHOOK_URL (it receives all types).
    stack.receiver.wait_for("/default", "wallet.ledger_entry.created", count=5)
    assert len(stack.receiver.of("/default", "wallet.balance_low")) == 1
    assert len(stack.receiver.of("/ep", "wallet.balance_low")) == 1
    assert len(stack.messages("wallet.balance_low")) == 2  # one per destination
    assert stack.receiver.of("/ep", "wallet.ledger_entry.created", status=None) == []


def test_scan_catches_a_lost_immediate_check_once(stack: Stack) -> None:
    cid = _customer(stack, "lost@example.com")
    _entry(stack, cid, 3000, "credit")
    wait_until(lambda: _state(stack, cid) == "normal", what="wallet armed")
    # Written from this process: no worker hears of it, as if the check had been lost.
    with transaction(stack.settings) as s:
        ledger.post_entry(s, customer_id=cid, currency="USD", amount=2900, is_credit=False)
    (low,) = [
        d
        for d in stack.receiver.wait_for("/default", "wallet.balance_low", count=2, timeout=30)
        if d.payload["data"]["customer_id"] == cid
    ]
    assert low.verified and low.payload["data"]["balance"] == 100
    # Several more scans run (every 2 s); none sends it again.
    scans_before = (stack.tmp / "celery-beat.log").read_text().count("scan_low_balances")
    wait_until(
        lambda: (
            (stack.tmp / "celery-beat.log").read_text().count("scan_low_balances")
            >= scans_before + 2
        ),
        timeout=15,
        what="two more scans",
    )
    stack.cli("tasks", "run", "check-low-balances", "--sync")
    lows = [
        d
        for d in stack.receiver.of("/default", "wallet.balance_low")
        if d.payload["data"]["customer_id"] == cid
    ]
    assert len(lows) == 1


def test_manual_triggers(stack: Stack) -> None:
    ran = stack.cli("tasks", "run", "check-low-balances", "--sync")
    assert ran.returncode == 0, ran.stderr
    assert set(json.loads(ran.stdout)) == {
        "candidates",
        "balance_low",
        "balance_recovered",
        "armed",
        "depleted",
    }
    queued = stack.cli("tasks", "run", "check-low-balances")
    assert queued.returncode == 0 and "id=" in queued.stdout
    listed = stack.cli_here("tasks", "list")
    assert "check-low-balances" in listed and "dispatch-notifications" in listed
    called = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "worker", "call",
         "tasks.notifications.scan_low_balances"],
        env=stack.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert called.returncode == 0 and len(called.stdout.strip()) == 36, called.stderr

    admin = stack.api("POST", "/admin/tasks/check-low-balances")
    assert admin.status_code == 202 and len(admin.json()["task_id"]) == 36
    plain = json.loads(stack.cli_here("apikeys", "create", "--json"))["key"]
    forbidden = stack.api("POST", "/admin/tasks/check-low-balances", key=plain)
    assert forbidden.status_code == 403 and forbidden.json()["code"] == "FORBIDDEN"
    unknown = stack.api("POST", "/admin/tasks/nope")
    assert unknown.status_code == 404 and unknown.json()["field"] == "name"

    delivered = stack.cli_here("notifications", "list", "--status", "delivered", "--json")
    items = json.loads(delivered)["items"]
    low = next(i for i in items if i["event_type"] == "wallet.balance_low" and not i["endpoint_id"])
    before = len(stack.receiver.of("/default", "wallet.balance_low"))
    resent = stack.cli("notifications", "resend", low["id"])
    assert resent.returncode == 0 and "delivered" in resent.stdout, resent.stderr
    again = stack.receiver.of("/default", "wallet.balance_low")
    assert len(again) == before + 1 and again[-1].webhook_id == low["id"] and again[-1].verified
    missing = stack.cli("notifications", "resend", "msg_nope")
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1


def test_operations_endpoints(stack: Stack) -> None:
    health = httpx.get(stack.base + "/healthz", timeout=10)
    assert health.status_code == 200 and health.json() == {"database": "ok", "broker": "ok"}
    body = httpx.get(stack.base + "/metrics", timeout=10).text
    assert 'billing_http_requests_total{method="POST",route="/customers",status="200"}' in body
    assert "billing_outbox_lag_seconds" in body and "billing_inbox_pending" in body
    ports = (stack.metrics_port, stack.metrics_port + 1)

    def worker_metrics() -> str:
        text = ""
        for port in ports:
            try:
                text += httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            except httpx.HTTPError:
                pass
        return text

    scraped = wait_until(
        lambda: "billing_notification_deliveries_total" in worker_metrics() and worker_metrics(),
        what="worker metrics",
    )
    assert 'outcome="delivered"' in scraped
    log_line = next(
        line
        for line in (stack.tmp / "celery-worker.log").read_text().splitlines()
        if '"message_id"' in line
    )
    assert json.loads(log_line)["message_id"].startswith("msg_")


def test_broker_down_never_fails_a_request_and_the_scan_catches_up(stack: Stack) -> None:
    dead_broker = f"redis://127.0.0.1:{free_port()}/0"
    env = {**stack.env, "CELERY_BROKER_URL": dead_broker}
    env.pop("PROMETHEUS_MULTIPROC_DIR")
    with gunicorn(env, stack.tmp, workers=1) as base:
        down = httpx.get(base + "/healthz", timeout=10)
        assert down.status_code == 503 and down.json()["broker"].startswith("down")
        cut_off = Stack(base, env, stack.settings, stack.receiver, 0, stack.tmp)
        cid = _customer(cut_off, "brokerless@example.com")
        _entry(cut_off, cid, 4000, "credit")  # answered although nothing could be enqueued
        _entry(cut_off, cid, 3500, "debit")

    # The live worker's scheduled scan finds the crossing (armed by the wallet's history).
    # Wait for this customer's notification itself: counting all deliveries at /default
    # would depend on what earlier tests in the module sent.
    def mine() -> list:
        return [
            d
            for d in stack.receiver.of("/default", "wallet.balance_low")
            if d.payload["data"]["customer_id"] == cid
        ]

    wait_until(mine, timeout=30, what="the scan's wallet.balance_low for this customer")
    time.sleep(2 * SCAN_SECONDS)  # another scan must not send it again
    assert len(mine()) == 1 and mine()[0].payload["data"]["balance"] == 500


def test_concurrent_api_debits_crossing_at_once_notify_once(stack: Stack) -> None:
    cid = _customer(stack, "concurrent@example.com")
    _entry(stack, cid, 1400, "credit")
    wait_until(lambda: _state(stack, cid) == "normal", what="wallet armed")
    barrier = threading.Barrier(8)

    def debit() -> None:
        barrier.wait(10)
        _entry(stack, cid, 100, "debit")  # 1400 -> 600: one of the eight crosses

    threads = [threading.Thread(target=debit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    def settled() -> bool:
        # Every entry announced and nothing pending: all eight checks have run.
        mine = [
            d
            for d in stack.receiver.of("/default", "wallet.ledger_entry.created")
            if d.payload["data"]["customer_id"] == cid
        ]
        with transaction(stack.settings) as s:
            pending = s.scalars(
                select(OutboxMessage.id).where(OutboxMessage.status == "pending")
            ).all()
        return len(mine) == 9 and not pending

    wait_until(settled, timeout=30, what="all deliveries")
    lows = [
        d
        for d in stack.receiver.of("/default", "wallet.balance_low")
        if d.payload["data"]["customer_id"] == cid
    ]
    assert len(lows) == 1 and lows[0].payload["data"]["balance"] < 1000
    assert _state(stack, cid) == "low"
