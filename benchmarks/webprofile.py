"""``python -m benchmarks.webprofile [--pyinstrument] [-n N]``: CPU per request, in-process.

Calls the Flask app's WSGI callable directly (no server, no test client building each
environ) on a scratch PostgreSQL database seeded like the pgbench references, and reports the
process CPU per request of ``POST /customers/{id}/wallets/ledger-entries`` (spread over the
seeded wallets, and on the hot one) and of a signed ``POST /webhooks/dodo``. With
``--pyinstrument`` each shape is also profiled and its call tree printed. ``--server DIR
[--server-kind gunicorn]`` instead starts the benchmarks' web server, drives it with ``wrk -c8``
and records every worker with ``py-spy`` for 10 s (raw stacks in DIR). Not part of
``python -m benchmarks``: a tool for finding where a request's CPU goes (docs/performance.md).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from types import SimpleNamespace

from benchmarks.clients import API_KEY, WEBHOOK_SECRET, signed_delivery
from benchmarks.pgbench import FIRST_CUSTOMER, HOT_CUSTOMER, LAST_CUSTOMER


def _environ(method: str, path: str, body: bytes, headers: dict[str, str]) -> dict:
    environ = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    for name, value in headers.items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    return environ


def ledger_requests(hot: bool) -> Iterator[dict]:
    auth = {"Authorization": f"Bearer {API_KEY}"}
    tag = f"{os.getpid()}-{time.time_ns()}"
    n = 0
    while True:
        n += 1
        customer = HOT_CUSTOMER if hot else random.randint(FIRST_CUSTOMER, LAST_CUSTOMER)
        body = json.dumps(
            {
                "amount": 1,
                "currency": "USD",
                "entry_type": "credit",
                "reason": "profile",
                "idempotency_key": f"prof-{tag}-{n}",
            }
        ).encode()
        yield _environ("POST", f"/customers/{customer}/wallets/ledger-entries", body, auth)


def webhook_requests() -> Iterator[dict]:
    from standardwebhooks import Webhook

    webhook = Webhook(WEBHOOK_SECRET)
    tag = f"p{os.getpid()}{time.time_ns()}"
    n = 0
    while True:
        n += 1
        msg_id, stamp, signature, body = signed_delivery(webhook, tag, n, datetime.now(UTC))
        headers = {"webhook-id": msg_id, "webhook-timestamp": stamp, "webhook-signature": signature}
        yield _environ("POST", "/webhooks/dodo", body.encode(), headers)


def call(app: Callable, environ: dict) -> str:
    status: list[str] = []

    def start_response(s: str, _headers: list, _exc: object = None) -> None:
        status.append(s)

    chunks = app(environ, start_response)
    for _ in chunks:
        pass
    getattr(chunks, "close", lambda: None)()
    return status[0]


def measure(app: Callable, requests: Iterator[dict], n: int, profiler: bool) -> float:
    """CPU ms per request over ``n`` requests (after a warm-up), optionally profiled."""
    # Built first: the load's own CPU (signing a webhook, say) is not the server's.
    environs = [next(requests) for _ in range(n + 50)]
    for environ in environs[:50]:
        call(app, environ)
    prof = None
    if profiler:
        from pyinstrument import Profiler

        prof = Profiler(interval=0.0002)
        prof.start()
    started = time.process_time()
    for environ in environs[50:]:
        status = call(app, environ)
        if not status.startswith("200"):
            raise RuntimeError(f"unexpected status {status}")
    cpu = (time.process_time() - started) / n * 1000
    if prof is not None:
        prof.stop()
        print(prof.output_text(unicode=False, color=False, show_all=False, short_mode=False))
    return cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.webprofile")
    parser.add_argument("-n", type=int, default=2000, help="requests per shape")
    parser.add_argument("--pyinstrument", action="store_true", help="print each call tree")
    parser.add_argument("--only", nargs="*", default=["spread", "hot", "webhook"])
    parser.add_argument(
        "--server",
        metavar="DIR",
        help="instead: the benchmarks' web server under wrk -c8 (ledger entries, spread), "
        "py-spy recording each worker for 10 s into DIR",
    )
    parser.add_argument("--server-kind", choices=("granian", "gunicorn"), default="granian")
    args = parser.parse_args(argv)
    if args.server:
        return server_profile(args.server, args.server_kind)

    from benchmarks import pgbench
    from benchmarks.support import create_pg_database, drop_pg_database, redis_server
    from worker.config import Settings
    from worker.infra import migrate
    from worker.infra.db import dispose_engines

    with ExitStack() as stack:
        import tempfile
        from pathlib import Path

        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        name, url = create_pg_database("bw_prof")
        stack.callback(drop_pg_database, name)
        stack.callback(dispose_engines)
        redis_url, _ = stack.enter_context(redis_server(tmp))
        migrate.upgrade(Settings(database_url=url))
        pgbench.seed(SimpleNamespace(pg_dsn=f"host=127.0.0.1 port=5432 user=root dbname={name}"))
        os.environ.update(
            DATABASE_URL=url,
            CELERY_BROKER_URL=redis_url,
            BILLING_API_KEY=API_KEY,
            DODO_WEBHOOK_SECRET=WEBHOOK_SECRET,
        )
        from webhooks import create_app

        app = create_app(Settings.from_env())
        shapes = {
            "spread": lambda: ledger_requests(hot=False),
            "hot": lambda: ledger_requests(hot=True),
            "webhook": webhook_requests,
        }
        for shape in args.only:
            cpu = measure(app, shapes[shape](), args.n, args.pyinstrument)
            print(f"{shape}: {cpu:.3f} ms CPU per request ({args.n} requests)", flush=True)
    return 0


def server_profile(out: str, kind: str) -> int:
    """py-spy on every worker of the benchmarks' web server while wrk posts ledger entries."""
    import shutil
    import subprocess
    import tempfile
    from pathlib import Path

    from benchmarks import http, pgbench, services
    from benchmarks.common import Context
    from benchmarks.support import create_pg_database, drop_pg_database, redis_server
    from worker.config import Settings
    from worker.infra import migrate
    from worker.infra.db import dispose_engines

    spy = shutil.which("py-spy")
    if spy is None:
        raise SystemExit("py-spy is not installed (pip install py-spy)")
    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        name, url = create_pg_database("bw_prof")
        stack.callback(drop_pg_database, name)
        stack.callback(dispose_engines)
        redis_url, _ = stack.enter_context(redis_server(tmp))
        migrate.upgrade(Settings(database_url=url))
        dsn = f"host=127.0.0.1 port=5432 user=root dbname={name}"
        ctx = Context(
            quick=False,
            database_url=url,
            pg_dsn=dsn,
            redis_url=redis_url,
            workdir=str(tmp),
            stack=stack,
        )
        pgbench.seed(ctx)
        base = stack.enter_context(
            services.web(
                services.service_env(ctx),
                tmp,
                services.WEB_WORKERS,
                services.WEB_THREADS,
                server=kind,
            )
        )
        script = tmp / "spread.lua"
        script.write_text(http._LUA % (FIRST_CUSTOMER, LAST_CUSTOMER, API_KEY, "credit"))
        services.wrk(base, script, 2, 8)  # warm-up
        port = base.rsplit(":", 1)[1]
        load = subprocess.Popen(
            ["wrk", "-t2", "-c8", "-d14s", "-s", str(script), base], stdout=subprocess.PIPE
        )
        time.sleep(2)
        workers = services.worker_pids(port)
        spies = [
            subprocess.Popen(
                [
                    spy,
                    "record",
                    "-r",
                    "200",
                    "-d",
                    "10",
                    "-f",
                    "raw",
                    "-p",
                    str(pid),
                    "-o",
                    str(target / f"worker-{pid}.txt"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for pid in workers
        ]
        for p in spies:
            p.wait()
        print(load.communicate()[0].decode())
        print(f"py-spy: {len(workers)} workers recorded into {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
