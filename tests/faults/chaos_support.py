"""Load and checks shared by the chaos scenarios: signed payment bursts, usage ingest, and the
exactly-once accounting of what the service answered 2xx for."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal

import httpx
from sqlalchemy import create_engine, text

from tests.faults.stack import API_KEY, Stack
from tests.support.usage import accounting, assert_exact, new_customer
from tests.support.webhooks import dodo_headers, dodo_payment, dumps
from worker.infra.db import transaction

# Every payment credits this much; every usage event is an ``api_call`` at 0.3 cents, so a
# wallet's debits are floor(0.3 x events) and its remainder the rest, exactly.
CREDIT = 1_000
OPENING_BALANCE = 1_000_000  # usage never runs a wallet dry: no unbilled amounts to reason about


def make_customers(stack: Stack, count: int) -> list[str]:
    tag = uuid.uuid4().hex[:6]
    with transaction(stack.settings) as session:
        return [
            new_customer(session, f"chaos.{tag}.{i}@example.com", credit=OPENING_BALANCE)
            for i in range(count)
        ]


def payment_for(customer_id: str, payment_id: str) -> dict:
    return dodo_payment(
        payment_id=payment_id,
        customer_id=customer_id,
        email=f"{customer_id}@example.com",  # unused: the customer exists by id
        wallet_credit=CREDIT,
    )


@dataclass
class Outcomes:
    """What the service answered, request by request (thread-safe)."""

    payments: dict[str, int] = field(default_factory=dict)  # payment_id -> status (last)
    usage: dict[str, tuple[str, int]] = field(default_factory=dict)  # event_id -> (cust, st)
    timeline: list[tuple[float, float, int]] = field(default_factory=list)  # start, end, status
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, started: float, status: int) -> None:
        with self.lock:
            self.timeline.append((started, time.monotonic(), status))

    def ok_payments(self) -> set[str]:
        return {p for p, status in self.payments.items() if 200 <= status < 300}

    def ok_usage(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for customer, status in self.usage.values():
            if 200 <= status < 300:
                counts[customer] = counts.get(customer, 0) + 1
        return counts


def post_payment(
    client: httpx.Client, out: Outcomes, customer_id: str, payment_id: str, **sign: object
) -> int:
    body = dumps(payment_for(customer_id, payment_id))
    started = time.monotonic()
    try:
        status = client.post("/webhooks/dodo", content=body, headers=dodo_headers(body, **sign))
        code = status.status_code
    except httpx.HTTPError:
        code = 0  # no answer: the provider would retry; not a 2xx, so not promised
    out.record(started, code)
    with out.lock:
        out.payments[payment_id] = code
    return code


def post_usage(
    client: httpx.Client, out: Outcomes, customer_ids: list[str], count: int, tag: str
) -> int:
    events = [
        {
            "event_id": f"ev_{tag}_{i}",
            "customer_id": customer_ids[i % len(customer_ids)],
            "event_name": "api_call",
        }
        for i in range(count)
    ]
    started = time.monotonic()
    try:
        response = client.post(
            "/events/ingest",
            json={"events": events},
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
        code = response.status_code
    except httpx.HTTPError:
        code = 0
    out.record(started, code)
    with out.lock:
        for event in events:
            out.usage[event["event_id"]] = (event["customer_id"], code)
    return code


def burst(
    stack: Stack,
    out: Outcomes,
    customer_ids: list[str],
    *,
    until: threading.Event,
    threads: int = 4,
    usage_every: int = 0,
    usage_size: int = 100,
    pause: float = 0.0,
    max_payments: int = 100_000,
) -> threading.Thread:
    """Post signed payments (and, every ``usage_every``-th request, a usage batch) from
    ``threads`` clients, each pausing ``pause`` s between requests, until ``until`` is set;
    returns the running coordinator thread."""
    tag = uuid.uuid4().hex[:6]
    counter = iter(range(max_payments))
    counter_lock = threading.Lock()

    def client_loop(worker: int) -> None:
        with httpx.Client(base_url=stack.base_url, timeout=15) as client:
            while not until.is_set():
                with counter_lock:
                    n = next(counter, None)
                if n is None:
                    return
                customer = customer_ids[n % len(customer_ids)]
                if usage_every and n % usage_every == usage_every - 1:
                    post_usage(client, out, customer_ids, usage_size, f"{tag}_{n}")
                else:
                    post_payment(client, out, customer, f"pay_{tag}_{n}")
                until.wait(pause)

    def run() -> None:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(client_loop, range(threads)))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


PENDING_SQL = (
    "SELECT (SELECT count(*) FROM inbox_events WHERE status = 'pending')"
    " + (SELECT count(*) FROM usage_events WHERE status = 'pending')"
)


def in_flight(stack: Stack) -> int:
    """Inbox and usage events stored but not applied yet."""
    return int(stack.scalar(PENDING_SQL))  # type: ignore[arg-type]


def wait_settled(stack: Stack, timeout: float, what: str) -> None:
    """Until no inbox event and no usage event is pending."""
    from tests.support.processes import wait_until

    def settled() -> bool:
        try:
            return in_flight(stack) == 0
        except Exception:  # the database may still be recovering
            return False

    try:
        wait_until(settled, timeout=timeout, interval=0.25, what=what)
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}\n{_diagnosis(stack)}") from None


def _diagnosis(stack: Stack) -> str:
    """What is still pending and what the processes said last: a timeout must explain itself."""
    lines = []
    try:
        engine = create_engine(stack.database_url)
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT status, coalesce(left(error, 60), ''), count(*),"
                    " min(received_at), max(received_at), now()"
                    " FROM inbox_events GROUP BY 1, 2"
                )
            ).all()
            lines += [f"inbox {row}" for row in rows]
            usage = conn.execute(text("SELECT status, count(*) FROM usage_events GROUP BY 1")).all()
            lines += [f"usage {row}" for row in usage]
        engine.dispose()
    except Exception as exc:  # the diagnosis must not hide the timeout
        lines.append(f"(database unreadable: {exc})")
    for name in ("beat.log", "worker.log", "gunicorn.log"):
        path = stack.tmp / name
        if path.exists():
            tail = path.read_text(errors="replace").splitlines()[-15:]
            lines += [f"--- {name} (last {len(tail)} lines)", *tail]
    return "\n".join(lines)


def check_exactly_once(stack: Stack, payments: set[str], usage: dict[str, int]) -> None:
    """Every payment answered 2xx credited exactly once, every usage event answered 2xx billed
    exactly once with exact debits, no half-applied batch, and the bank invariant."""
    engine = create_engine(stack.database_url)
    try:
        with engine.connect() as conn:
            inbox = dict(
                conn.execute(
                    text("SELECT status, count(*) FROM inbox_events GROUP BY status")
                ).all()
            )
            assert set(inbox) <= {"processed"}, inbox
            credits = {
                key: (n, total)
                for key, n, total in conn.execute(
                    text(
                        "SELECT idempotency_key, count(*), sum(amount) FROM ledger_entries"
                        " WHERE idempotency_key LIKE 'payment:%' GROUP BY idempotency_key"
                    )
                )
            }
            missing = {p for p in payments if f"payment:{p}" not in credits}
            assert not missing, f"{len(missing)} payment(s) answered 2xx were never credited"
            # One entry per payment, of exactly its amount (also for any that were stored but
            # whose answer was lost: the provider would retry those).
            assert {v for v in credits.values()} <= {(1, CREDIT)}, credits
            # A usage batch is all or nothing: every billed event names an existing debit, and
            # every usage debit is named by the events it billed.
            orphans = conn.execute(
                text("""
                SELECT
                  (SELECT count(*) FROM usage_events u WHERE u.ledger_entry_id IS NOT NULL
                     AND NOT EXISTS
                       (SELECT 1 FROM ledger_entries e WHERE e.id = u.ledger_entry_id)),
                  (SELECT count(*) FROM ledger_entries e WHERE e.event_type = 'usage'
                     AND NOT EXISTS
                       (SELECT 1 FROM usage_events u WHERE u.ledger_entry_id = e.id)),
                  (SELECT count(*) FROM usage_events WHERE status <> 'processed')
            """)
            ).one()
            assert tuple(orphans) == (0, 0, 0), orphans
            processed = dict(
                conn.execute(
                    text("SELECT customer_id, count(*) FROM usage_events GROUP BY customer_id")
                ).all()
            )
            for customer, count in usage.items():
                assert processed.get(customer, 0) >= count, (customer, processed.get(customer))
    finally:
        engine.dispose()
    with transaction(stack.settings) as session:
        for customer, count in processed.items():
            acc = accounting(session, customer)
            assert_exact(acc)
            assert acc["cost"] == Decimal(3 * count) / 10, (customer, acc)
            assert acc["unbilled"] == 0
            assert acc["debited"] == (3 * count) // 10, (customer, acc)
    assert stack.bank_invariant() == []


def run_for(seconds: float, step: Callable[[], None] | None = None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if step:
            step()
        time.sleep(0.05)
