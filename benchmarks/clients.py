"""Load-generating client code that runs in separate processes (a spawn pool).

Kept apart from the benchmark modules on purpose: a spawned child imports only this module
(the standard library, httpx, standardwebhooks), not SQLAlchemy or the service, so starting a
client costs little CPU on the machine under test.
"""

from __future__ import annotations

import http.client
import json
import multiprocessing
import os
import random
import time
from datetime import datetime
from typing import Any

API_KEY = "bench-key-0123456789abcdefghijklmnopq"  # the run's BILLING_API_KEY (benchmarks.services)
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
USAGE_CUSTOMERS = 1000
WEBHOOK_CUSTOMERS = 500
WEBHOOK_CREDIT = 100


def usage_event(i: int, prefix: str) -> dict[str, Any]:
    """Event ``i``: odd ones are api_call, even ones llm_tokens with a token count."""
    event: dict[str, Any] = {
        "event_id": f"{prefix}{i}",
        "customer_id": f"cus_b{i % USAGE_CUSTOMERS:04d}",
        "event_name": "api_call" if i % 2 else "llm_tokens",
    }
    if not i % 2:
        event["metadata"] = {"tokens": 100 + i % 977}
    return event


def post_usage(base: str, indexes: list[int], start_at: float, batch: int) -> None:
    """Post usage events ``indexes`` in batches, starting at wall-clock ``start_at``."""
    import httpx

    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=base, timeout=60, headers=headers) as client:
        while time.time() < start_at:
            time.sleep(0.001)
        for k in range(0, len(indexes), batch):
            body = {"events": [usage_event(i, "e") for i in indexes[k : k + batch]]}
            client.post("/events/ingest", json=body).raise_for_status()


def signed_delivery(webhook: Any, tag: str, i: int, now: datetime) -> tuple[str, str, str, str]:
    """One signed ``payment.succeeded`` delivery: (webhook-id, timestamp, signature, body)."""
    customer = i % WEBHOOK_CUSTOMERS
    body = json.dumps(
        {
            "business_id": "bus_local",
            "type": "payment.succeeded",
            "timestamp": now.isoformat(),
            "data": {
                "payment_id": f"pay_{tag}_{i}",
                "total_amount": WEBHOOK_CREDIT,
                "currency": "USD",
                "customer": {
                    "customer_id": f"cus_bench_{customer}",
                    "email": f"bench{customer}@example.com",
                    "name": f"Bench {customer}",
                },
                "metadata": {"wallet_credit": str(WEBHOOK_CREDIT)},
                "product_cart": [],
            },
        },
        separators=(",", ":"),
    )
    msg_id = f"msg_{tag}_{i}"
    return msg_id, str(int(now.timestamp())), webhook.sign(msg_id, now, body), body


# -- paced, open-loop ledger-entry client -------------------------------------------------------


def paced_ledger(
    base: str, customer_ids: list[str], rate: float, duration: float, processes: int
) -> dict[str, float]:
    """Credits at ``rate`` req/s in total from ``processes`` processes; p50/p99 in ms."""
    context = multiprocessing.get_context("spawn")
    # One wall-clock start for every process, after all of them have spawned and imported:
    # the latency measured is the service's, not the CPU spike of the client pool starting.
    start_at = time.time() + 2.0
    with context.Pool(processes) as pool:
        parts = pool.starmap(
            _paced_ledger_worker,
            [
                (base, customer_ids, rate / processes, duration, i, start_at)
                for i in range(processes)
            ],
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


def _paced_ledger_worker(
    base: str, customer_ids: list[str], rate: float, duration: float, worker: int, start_at: float
) -> tuple[list[float], int]:
    """Send at ``rate`` req/s on a fixed schedule; latency from the scheduled send time, so a
    stall is not hidden by the client waiting for it (open loop)."""
    host, port = base.removeprefix("http://").split(":")
    interval = 1.0 / rate
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    latencies: list[float] = []
    errors = 0
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    start = time.perf_counter() + max(0.0, start_at - time.time())
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


# -- the soak's mixed load -----------------------------------------------------------------------


def paced_mixed(
    kind: str, base: str, rate: float, seconds: float, first: int, last: int
) -> tuple[int, int]:
    """Send ``kind`` (ledger, webhook or usage) requests at ``rate``/s for ``seconds``;
    returns (sent, non-2xx or failed)."""
    import uuid
    from datetime import UTC

    from standardwebhooks import Webhook

    host, port = base.removeprefix("http://").split(":")
    webhook = Webhook(WEBHOOK_SECRET)
    tag = uuid.uuid4().hex[:8]
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    sent = errors = n = 0
    start = time.monotonic()
    while (scheduled := start + n / rate) < start + seconds:
        delay = scheduled - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        n += 1
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"}
        if kind == "ledger":
            path = f"/customers/{random.randint(first, last)}/wallets/ledger-entries"
            body = json.dumps(
                {"amount": 1, "currency": "USD", "entry_type": "credit",
                 "idempotency_key": f"soak-{tag}-{n}"}
            )  # fmt: skip
        elif kind == "webhook":
            path = "/webhooks/dodo"
            msg_id, ts, sig, body = signed_delivery(webhook, tag, n, datetime.now(UTC))
            headers |= {"webhook-id": msg_id, "webhook-timestamp": ts, "webhook-signature": sig}
        else:
            path = "/events/ingest"
            events = [usage_event(n * 100 + i, f"s{tag}") for i in range(100)]
            body = json.dumps({"events": events})
        try:
            connection.request("POST", path, body, headers)
            response = connection.getresponse()
            response.read()
            sent += 1
            errors += not 200 <= response.status < 300
        except (OSError, http.client.HTTPException):
            errors += 1
            connection.close()
            connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.close()
    return sent, errors
