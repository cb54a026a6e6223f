"""Issue 13 items 6-8 tried as an attacker would, against the real server: gunicorn (two
workers) on PostgreSQL, failure counts in a real redis-server, the real CLI process."""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.processes import (
    ROOT,
    create_pg_database,
    drop_pg_database,
    gunicorn,
    process_env,
    spawn,
    stop,
    wait_until,
)
from worker.access import apikeys
from worker.config import Settings
from worker.infra import migrate
from worker.infra.db import dispose_engines, transaction

pytestmark = pytest.mark.slow

API_KEY = "abuse-bootstrap-key-0123456789abcdef"
LIMIT = 5


@dataclass
class Server:
    base: str
    url: str  # the database
    access_log: Path
    stored_key: str


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    """A migrated PostgreSQL database for this module."""
    name, url = create_pg_database("bw_abuse")
    migrate.upgrade(Settings(database_url=url))
    yield url
    dispose_engines()
    drop_pg_database(name)


@pytest.fixture(scope="module")
def server(
    database: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """gunicorn with 2 workers, AUTH_FAILURE_LIMIT=5, counts in Redis, an access log."""
    tmp = tmp_path_factory.mktemp("abuse")
    with transaction(Settings(database_url=database)) as s:
        _, stored = apikeys.create_key(s, name="backend")
    access_log = tmp / "access.log"
    env = process_env(
        DATABASE_URL=database,
        BILLING_API_KEY=API_KEY,
        AUTH_FAILURE_LIMIT=str(LIMIT),
        RATELIMIT_STORAGE_URL=redis_url,
    )
    extra = ["--access-logfile", str(access_log)]
    with gunicorn(env, tmp, workers=2, extra=extra) as base:
        yield Server(base, database, access_log, stored)


def _get(server: Server, headers: dict[str, str], path: str = "/customers") -> httpx.Response:
    return httpx.get(server.base + path, headers=headers, timeout=10)


def test_failures_are_throttled_while_valid_keys_from_the_same_address_still_work(
    server: Server,
) -> None:
    wrong = {"Authorization": "Bearer bwk_" + "W" * 43}
    statuses = [_get(server, wrong).status_code for _ in range(LIMIT)]
    assert statuses == [401] * LIMIT  # counted in Redis, whichever worker answered
    throttled = _get(server, wrong)
    assert throttled.status_code == 429
    assert throttled.headers["content-type"] == "application/json"
    assert throttled.json()["code"] == "TOO_MANY_FAILED_AUTHENTICATIONS"
    assert 1 <= int(throttled.headers["Retry-After"]) <= 60
    # From the same address, at the same time: valid keys are never throttled.
    for key in (API_KEY, server.stored_key):
        ok = _get(server, {"Authorization": f"Bearer {key}"})
        assert ok.status_code == 200, ok.text
    assert _get(server, {"Authorization": "Bearer another-wrong-key"}).status_code == 429


def test_no_key_or_query_string_reaches_the_access_log(server: Server) -> None:
    secret = server.stored_key
    basic = base64.b64encode(f"{secret}:".encode()).decode()
    before = len(server.access_log.read_text().splitlines())
    response = httpx.get(
        f"{server.base}/customers?api_key={secret}&token=query-secret-value",
        headers={"Authorization": f"Basic {basic}", "Referer": f"https://x.test/?k={secret}"},
        timeout=10,
    )
    assert response.status_code in (401, 429)
    ok = httpx.get(
        f"{server.base}/customers?page_size=1&note=query-secret-value",
        headers={"Authorization": f"Bearer {secret}"},
        timeout=10,
    )
    assert ok.status_code == 200
    log = wait_until(
        lambda: len((t := server.access_log.read_text()).splitlines()) >= before + 2 and t,
        what="the two requests' access log lines",
    )
    assert secret not in log and "query-secret-value" not in log and "api_key" not in log
    assert '"GET /customers HTTP/1.1" 200' in log


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_short_bootstrap_key_refuses_to_start_on_postgresql(
    database: str, tmp_path: Path
) -> None:
    env = process_env(DATABASE_URL=database, BILLING_API_KEY="dev-key")
    from worker.infra.processes import gunicorn_command

    log = tmp_path / "gunicorn.log"
    proc = spawn(gunicorn_command("127.0.0.1:0", 1), env, log)
    try:
        code = proc.wait(timeout=60)
    finally:
        stop(proc)
    assert code != 0
    text = log.read_text()
    assert "BILLING_API_KEY: must be at least 32 characters" in text and "dev-key" not in text
    # The CLI (and so `billing-worker serve`) refuses too: one line, exit 2.
    done = _cli(env, "db", "upgrade")
    assert done.returncode == 2
    assert done.stderr.startswith("billing-worker: BILLING_API_KEY: must be at least 32")
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9/hook", "http://169.254.169.254/latest", "http://[::1]/x"]
)
def test_an_endpoint_at_a_private_address_is_refused(database: str, url: str) -> None:
    env = process_env(DATABASE_URL=database, ENDPOINT_SECRET_KEY=_fernet_key())
    done = _cli(env, "endpoints", "add", url)
    assert done.returncode == 2
    assert done.stderr.startswith("billing-worker: url: ")
    assert "is not a public address" in done.stderr


def test_notify_webhook_url_at_a_private_address_stops_start_up(database: str) -> None:
    env = process_env(
        DATABASE_URL=database,
        NOTIFY_WEBHOOK_URL="http://10.0.0.5/hooks",
        NOTIFY_WEBHOOK_SECRET="whsec_aGVsbG8=",
    )
    done = _cli(env, "tasks", "list")
    assert done.returncode == 2
    assert "NOTIFY_WEBHOOK_URL: 10.0.0.5 is not a public address" in done.stderr


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()
