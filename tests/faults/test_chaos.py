"""Chaos scenarios on the whole service as real processes (gunicorn, Celery worker, beat, a
private redis-server, PostgreSQL): kill the worker, Redis or PostgreSQL mid-burst, storm it
with redeliveries, skew the clock; then prove every event answered 2xx was applied exactly
once and the bank invariant holds. Each scenario is bounded by hard timeouts."""

from __future__ import annotations

import random
import re
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.faults.chaos_support import (
    Outcomes,
    burst,
    check_exactly_once,
    in_flight,
    make_customers,
    payment_for,
    post_payment,
    post_usage,
    wait_settled,
)
from tests.faults.stack import Stack
from tests.support.processes import wait_until
from tests.support.webhooks import dodo_headers, dumps
from worker.infra.celery_app import make_celery

pytestmark = pytest.mark.slow


def _start_all(stack: Stack, concurrency: int = 2) -> None:
    # Started together: their imports (seconds each on 2 cores) overlap.
    stack.start_web(workers=2, wait=False)
    stack.start_beat()
    stack.start_worker(concurrency)
    stack.wait_web_ready()
    stack.wait_worker_ready()


# -- 1. SIGKILL the worker at random points ----------------------------------------------------

# Sizes: the 10,000 events are kept for usage (10 ingest requests of 1,000, the API's
# maximum, each followed by a billing task), plus 400 signed payment webhooks (applied in
# batches). The feed is paced over ~20 s, as long as the kills and restarts take, and each kill
# waits for a moment when events are stored but not applied: the worker drains a round in well
# under a second, so a kill at a purely random time would mostly hit an idle worker.
USAGE_EVENTS = 10_000
USAGE_PER_REQUEST = 1_000
PAYMENTS = 400
KILLS = 5


def test_worker_sigkilled_at_random_points_applies_every_event_once(tmp_path: Path) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"chaos seed {seed}")
    # Killed workers' unacked messages come back after 3 s; lost ones the sweepers re-send.
    with Stack(tmp_path, INBOX_SWEEP_SECONDS="2", BROKER_VISIBILITY_TIMEOUT="3") as stack:
        customers = make_customers(stack, 20)
        _start_all(stack)
        out = Outcomes()
        rounds = USAGE_EVENTS // USAGE_PER_REQUEST
        tag = uuid.uuid4().hex[:6]

        def feed() -> None:
            with httpx.Client(base_url=stack.base_url, timeout=30) as client:
                for r in range(rounds):
                    assert post_usage(client, out, customers, USAGE_PER_REQUEST, f"{tag}_{r}")
                    with ThreadPoolExecutor(4) as pool:
                        list(
                            pool.map(
                                lambda n: post_payment(
                                    client, out, customers[n % 20], f"pay_{tag}_{n}"
                                ),
                                range(r * PAYMENTS // rounds, (r + 1) * PAYMENTS // rounds),
                            )
                        )
                    time.sleep(1.5)

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        at_kill = []
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.2, 2.0))  # a random point: mid-task, mid-batch, mid-commit
            wait_until(
                lambda: in_flight(stack) > 0 or not feeder.is_alive(),
                timeout=15,
                interval=0.005,
                what="events in flight",
            )
            at_kill.append(in_flight(stack))
            stack.kill_worker()
            stack.start_worker(2)
            stack.wait_worker_ready()
        feeder.join(timeout=60)
        assert not feeder.is_alive()
        print(f"events in flight at each kill: {at_kill}")
        assert sum(1 for n in at_kill if n) >= 2, at_kill  # the kills hit work in progress
        wait_settled(stack, timeout=90, what="every event applied after the kills")
        assert len(out.usage) == USAGE_EVENTS and len(out.payments) == PAYMENTS
        assert {s for s in out.payments.values()} == {200}
        assert {s for _, s in out.usage.values()} == {200}
        check_exactly_once(stack, out.ok_payments(), out.ok_usage())


# -- 2. Redis down during a webhook burst --------------------------------------------------------

# 10 s of outage (the issue says 20 s): past the publish timeouts (~2 s) and several sweep
# intervals, which is what the scenario has to prove; more only lengthens the suite.
REDIS_DOWN_SECONDS = 10
# A paced burst (2 clients, 0.1 s between requests: ~20 webhooks/s, a usage batch of 50 every
# 10th request): a few hundred deliveries, all of them left to the sweeper during the outage.
# Unpaced, the receiver stores ~100/s and the backlog only makes the test longer on 2 cores.
BURST = {"threads": 2, "pause": 0.1, "usage_every": 10, "usage_size": 50}


def test_redis_down_during_burst_loses_nothing_answered_2xx(tmp_path: Path) -> None:
    with Stack(tmp_path, INBOX_SWEEP_SECONDS="2", BROKER_VISIBILITY_TIMEOUT="10") as stack:
        customers = make_customers(stack, 10)
        _start_all(stack)
        out = Outcomes()
        stop = threading.Event()
        feeder = burst(stack, out, customers, until=stop, **BURST)
        time.sleep(2)
        stack.stop_redis()
        down_from = time.monotonic()
        time.sleep(REDIS_DOWN_SECONDS)
        down_until = time.monotonic()
        stack.start_redis()
        time.sleep(3)
        stop.set()
        feeder.join(timeout=30)
        assert not feeder.is_alive()
        # The receiver stores first and only then tries the broker: it answers 2xx throughout.
        print(f"answers: {Counter(status for _, _, status in out.timeline)}")
        assert {status for _, _, status in out.timeline} == {200}
        during = [t for t in out.timeline if t[0] >= down_from and t[1] <= down_until]
        assert during, "no request was answered while Redis was down"
        wait_settled(stack, timeout=90, what="every stored event applied after Redis returned")
        check_exactly_once(stack, out.ok_payments(), out.ok_usage())


# -- 3. PostgreSQL restarted during a burst ------------------------------------------------------

PG_DOWN_SECONDS = 5


def test_postgres_restart_during_burst_is_503_then_nothing_lost(tmp_path: Path) -> None:
    with Stack(
        tmp_path, private_postgres=True, INBOX_SWEEP_SECONDS="2", BROKER_VISIBILITY_TIMEOUT="10"
    ) as stack:
        customers = make_customers(stack, 10)
        _start_all(stack)
        out = Outcomes()
        stop = threading.Event()
        feeder = burst(stack, out, customers, until=stop, **BURST)
        time.sleep(2)
        stack.stop_postgres("immediate")  # a crash: connections cut, recovery on start
        down_from = time.monotonic()
        time.sleep(PG_DOWN_SECONDS)
        down_until = time.monotonic()
        stack.start_postgres()
        time.sleep(3)
        stop.set()
        feeder.join(timeout=30)
        assert not feeder.is_alive()
        statuses = {status for _, _, status in out.timeline}
        print(f"answers: {Counter(status for _, _, status in out.timeline)}")
        assert statuses <= {200, 503}, statuses
        during = [s for start, end, s in out.timeline if start >= down_from and end <= down_until]
        assert during and set(during) == {503}, sorted(set(during))
        assert any(s == 200 for s in out.payments.values())
        wait_settled(stack, timeout=90, what="every stored event applied after PostgreSQL")
        check_exactly_once(stack, out.ok_payments(), out.ok_usage())


# -- 4. Redelivery storm -------------------------------------------------------------------------

STORM_PAYMENTS = 6  # x 50 copies each + 3 fresh webhook-ids each: 318 deliveries
STORM_COPIES = 50
_RECEIVED = re.compile(r"process_event\[([0-9a-f-]{36})\] received")


def _received_twice(stack: Stack) -> int:
    seen: dict[str, int] = {}
    for task_id in _RECEIVED.findall((stack.tmp / "worker.log").read_text(errors="replace")):
        seen[task_id] = seen.get(task_id, 0) + 1
    return sum(1 for n in seen.values() if n > 1)


def test_redelivery_storm_writes_no_duplicate_entries(tmp_path: Path) -> None:
    # A 1 s visibility timeout: any task that runs longer is handed out again while it runs.
    # The inbox sweeper is kept out of the way (60 s): its copies of the blocked events would
    # take the free children, and this scenario is about the broker's own redelivery.
    with Stack(tmp_path, INBOX_SWEEP_SECONDS="60", BROKER_VISIBILITY_TIMEOUT="1") as stack:
        customers = make_customers(stack, 5)
        stack.start_web(workers=2)
        stack.start_beat()
        out = Outcomes()
        tag = uuid.uuid4().hex[:6]
        # The provider's storm: each delivery (same webhook-id, same bytes) 50x concurrently,
        # plus each payment re-sent under 3 new webhook-ids (a new delivery of the same effect).
        deliveries = []
        for n in range(STORM_PAYMENTS):
            payment_id = f"pay_{tag}_{n}"
            body = dumps(payment_for(customers[n % 5], payment_id))
            headers = dodo_headers(body)
            deliveries += [(payment_id, body, headers)] * STORM_COPIES
            deliveries += [(payment_id, body, dodo_headers(body)) for _ in range(3)]
        random.shuffle(deliveries)

        local = threading.local()

        def deliver(item: tuple[str, str, dict[str, str]]) -> tuple[str, httpx.Response]:
            _, body, headers = item
            if not hasattr(local, "client"):  # one client per thread (building one is costly)
                local.client = httpx.Client(base_url=stack.base_url, timeout=30)
            response = local.client.post("/webhooks/dodo", content=body, headers=headers)
            return headers["webhook-id"], response

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(deliver, deliveries))
        assert {r.status_code for _, r in answers} == {200}
        firsts: dict[str, int] = {}
        for webhook_id, response in answers:
            firsts[webhook_id] = firsts.get(webhook_id, 0) + (not response.json()["duplicate"])
        assert set(firsts.values()) == {1}  # each delivery id stored exactly once
        assert stack.scalar("SELECT count(*) FROM inbox_events") == STORM_PAYMENTS * 4
        with httpx.Client(base_url=stack.base_url, timeout=30) as client:
            for r in range(4):
                assert post_usage(client, out, customers, 250, f"{tag}_{r}") == 200
        out.payments = {f"pay_{tag}_{n}": 200 for n in range(STORM_PAYMENTS)}

        # Two inbox rows held locked. The batches skip them (SKIP LOCKED); their own
        # process_event tasks, sent here as the sweeper would send them, block on the lock far
        # past the visibility timeout, so Redis hands those messages out again while they run,
        # and the two free children (the batches keep flowing through them) pick the copies up.
        with psycopg.connect(stack.database_url.replace("+psycopg", "")) as lock:
            held = [
                row[0]
                for row in lock.execute(
                    "SELECT id FROM inbox_events WHERE id IN"
                    " (SELECT id FROM inbox_events ORDER BY id LIMIT 2) FOR UPDATE"
                )
            ]
            stack.start_worker(4)
            stack.wait_worker_ready()
            celery = make_celery(stack.settings.with_overrides(broker_url=stack.broker_url))
            for event_id in held:
                celery.send_task("tasks.inbox.process_event", args=[event_id])
            wait_until(
                lambda: _received_twice(stack) >= 2,
                timeout=45,
                interval=0.2,
                what="Celery to redeliver running tasks",
            )
            # And the harsher kind: the worker dies with its blocked tasks unacknowledged.
            stack.kill_worker()
            lock.rollback()
        stack.start_worker(4)
        stack.wait_worker_ready()
        wait_settled(stack, timeout=60, what="the storm applied")
        assert _received_twice(stack) >= 2
        check_exactly_once(stack, out.ok_payments(), out.ok_usage())


# -- 5. Clock skew on webhook timestamps -----------------------------------------------------------


# Standard Webhooks' tolerance is 5 minutes either way: 4 minutes of drift is a slow clock,
# 6 minutes is a replay (or a clock too wrong to trust).
SKEWS = {-360: 401, 360: 401, -240: 200, 240: 200}


def test_webhook_clock_skew_of_6_minutes_rejected_4_minutes_accepted(tmp_path: Path) -> None:
    with Stack(tmp_path) as stack:
        customers = make_customers(stack, len(SKEWS))
        _start_all(stack)
        out = Outcomes()
        statuses = {}
        with httpx.Client(base_url=stack.base_url, timeout=15) as client:
            for customer, (skew, _) in zip(customers, SKEWS.items(), strict=True):
                payment_id = f"pay_skew{skew:+d}_{uuid.uuid4().hex[:8]}"
                statuses[skew] = post_payment(
                    client, out, customer, payment_id, timestamp=time.time() + skew
                )
        assert statuses == SKEWS
        # A rejected delivery is not even stored; an accepted one is applied once.
        assert stack.scalar("SELECT count(*) FROM inbox_events") == 2
        wait_settled(stack, timeout=30, what="the accepted deliveries applied")
        check_exactly_once(stack, out.ok_payments(), {})
        assert len(out.ok_payments()) == 2
