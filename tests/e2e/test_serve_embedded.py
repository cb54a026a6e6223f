"""The README's path: `billing-worker serve` on the embedded default (SQLite database, SQLite
broker, no server), a signed Dodo payment posted, the wallet credited."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.processes import free_port, process_env, stop, wait_until
from tests.support.webhooks import DODO_SECRET, dodo_payment, post_dodo

pytestmark = pytest.mark.slow


def test_serve_on_embedded_default_credits_a_signed_payment(tmp_path: Path) -> None:
    port = free_port()
    env = process_env(DODO_WEBHOOK_SECRET=DODO_SECRET, BILLING_API_KEY="dev-key")
    env.pop("DATABASE_URL", None)
    env.pop("CELERY_BROKER_URL", None)
    log = (tmp_path / "serve.log").open("ab")
    # cwd is the scratch directory: billing.db and celery-broker.db are the defaults' files.
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker", "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                return httpx.get(base + "/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, timeout=60, what="billing-worker serve")
        payload = dodo_payment(customer_id="cus_demo", email="demo@example.com")

        def delivered() -> bool:
            # A provider retries a delivery whose connection failed; so does this test (the
            # second web server worker may still be booting on a busy machine).
            try:
                return post_dodo(base, payload).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(delivered, timeout=30, interval=0.5, what="the webhook to be accepted")

        def credited() -> bool:
            response = httpx.get(
                base + "/customers/cus_demo/wallets",
                headers={"Authorization": "Bearer dev-key"},
                timeout=5,
            )
            return response.status_code == 200 and response.json()["items"][0]["balance"] == 2000

        wait_until(credited, timeout=60, interval=0.5, what="the wallet to be credited")
        assert (tmp_path / "celery-broker.db").exists()
    finally:
        stop(proc, sig=signal.SIGINT, timeout=30)
