"""``--soak``: a long, moderate mixed load, sampling web and worker RSS throughout.

One web server (granian) and one Celery worker serve, for ``seconds``: paced ledger-entry POSTs,
paced signed payment webhooks (credited by the worker) and usage batches (billed by the
worker), each from its own load process (a process pool, not this interpreter). A sampler reads
the RSS of every web server and celery process every few seconds. After a warm-up (imports,
pools and caches filling: the first 20% of the run, at most 60 s) every sample must stay
within ±10% of the first post-warm-up sample for the row to say "flat".
"""

from __future__ import annotations

import multiprocessing

from benchmarks import clients, memory, services
from benchmarks import usage as usage_bench
from benchmarks.common import Context, Row
from benchmarks.pgbench import FIRST_CUSTOMER, LAST_CUSTOMER
from worker.config import Settings
from worker.infra.db import dispose_engines

LEDGER_RATE = 40  # req/s
WEBHOOK_RATE = 40  # deliveries/s
USAGE_BATCH = 100  # events per POST, one POST a second
FLAT = 0.10


def run(ctx: Context, seconds: float) -> list[Row]:
    from benchmarks.pgbench import seed

    usage_bench._setup(Settings(database_url=ctx.database_url))  # funded usage customers
    seed(ctx)  # the 10,000 ledger wallets
    dispose_engines()
    interval = 5.0 if seconds >= 300 else max(1.0, seconds / 30)
    plan = [("ledger", LEDGER_RATE), ("webhook", WEBHOOK_RATE), ("usage", 1.0)]
    base = services.shared(ctx)
    with (
        memory.Sampler(interval=interval) as sampler,
        multiprocessing.get_context("spawn").Pool(len(plan)) as pool,
    ):
        sampler.sample()
        results = pool.starmap(
            clients.paced_mixed,
            [(kind, base, rate, seconds, FIRST_CUSTOMER, LAST_CUSTOMER) for kind, rate in plan],
        )
        sampler.sample()
    sent = {kind: r for (kind, _), r in zip(plan, results, strict=True)}
    warmup = min(60.0, 0.2 * seconds)
    first = sampler.series[0][0]
    steady = [totals for t, totals in sampler.series if t - first >= warmup]
    load = (
        f"process pool (3 paced: {LEDGER_RATE} ledger POST/s, {WEBHOOK_RATE} webhooks/s, "
        f"{USAGE_BATCH} usage events/s)"
    )
    rows = []
    for group, label in (("web", "web (granian)"), ("worker", "worker (celery)")):
        series = [totals[group] for totals in steady if totals[group]]
        if not series:
            raise RuntimeError(f"no {group} RSS samples during the soak")
        base_rss, end, peak = series[0], series[-1], max(series)
        low = min(series)
        flat = all(abs(v - base_rss) <= FLAT * base_rss for v in series)
        mib = 1024 * 1024
        rows.append(
            Row(
                "soak",
                f"RSS {label}, end of {seconds:.0f}s soak",
                end / mib,
                "MiB",
                goal="flat ±10%",
                note=f"{'FLAT' if flat else 'NOT FLAT'}: start {base_rss / mib:.1f} (after "
                f"{warmup:.0f}s warm-up), end {end / mib:.1f}, max {peak / mib:.1f}, "
                f"min {low / mib:.1f} MiB; {len(series)} samples every {interval:.0f}s",
                load=load,
            )
        )
    sent_note = ", ".join(f"{k} {s} sent/{e} non-2xx" for k, (s, e) in sent.items())
    rows.append(Row("soak", "requests during the soak", sum(s for s, _ in sent.values()),
                    "requests", note=sent_note, load=load))  # fmt: skip
    return rows
