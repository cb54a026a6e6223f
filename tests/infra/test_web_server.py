"""The Procfile's web server (granian, ``worker.infra.web_server``): no credential or query in
its access log, a graceful stop on SIGTERM, over-long request lines answered as JSON."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from tests.support.processes import free_port, process_env, spawn, stop, wait_until
from worker.infra import web_server
from worker.infra.processes import web_command


def test_access_log_format_has_the_path_but_no_query_or_header() -> None:
    fmt = web_server.ACCESS_LOG_FORMAT
    assert "%(path)s" in fmt
    for atom in ("query_string", "%({", "authorization", "referer"):
        assert atom not in fmt.lower()


def test_bind_is_host_and_port() -> None:
    assert web_server.parse_bind("0.0.0.0:8000") == ("0.0.0.0", 8000)
    assert web_server.parse_bind("[::1]:9000") == ("::1", 9000)
    with pytest.raises(ValueError, match="HOST:PORT"):
        web_server.parse_bind("localhost")


@pytest.mark.slow
def test_the_server_logs_no_secret_answers_json_414_and_stops_gracefully(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "web.log"
    env = process_env(DATABASE_URL=f"sqlite:///{tmp_path / 'billing.db'}", BILLING_API_KEY="k")
    from worker.config import Settings
    from worker.infra import migrate

    migrate.upgrade(Settings(database_url=env["DATABASE_URL"]))
    proc = spawn(web_command(f"127.0.0.1:{port}", workers=1, threads=2), env, log)
    base = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                return httpx.get(base + "/healthz", timeout=1).status_code in (200, 503)
            except httpx.HTTPError:
                return False

        wait_until(up, timeout=90, what="the web server")
        secret = "bwk_" + "s" * 43
        answered = httpx.get(
            base + f"/customers?api_key={secret}",
            auth=(secret, ""),  # a Basic header carrying a key
            headers={"Referer": f"https://example.com/?k={secret}"},
            timeout=10,
        )
        assert answered.status_code == 401
        # Past gunicorn's 8190-byte maximum too, the app's own JSON 414 answers.
        long = httpx.get(base + "/customers?q=" + "x" * 9000, timeout=10)
        assert (long.status_code, long.headers["content-type"]) == (414, "application/json")
        wait_until(lambda: "/customers" in log.read_text(), timeout=10, what="the access log")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        stop(proc)
    text = log.read_text()
    assert secret not in text and "api_key" not in text and "?q=" not in text
    assert '"GET /customers HTTP/1.1" 401' in text
    assert "Traceback" not in text
