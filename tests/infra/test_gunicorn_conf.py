"""gunicorn's settings: no credential or query string in its logs, no control socket."""

from __future__ import annotations

import logging

from gunicorn.config import Config

from worker import gunicorn_conf
from worker.infra.gunicorn import RedactingLogger, redact_queries


def _config() -> Config:
    """A gunicorn Config loaded from the Procfile's module, as `-c python:...` does."""
    config = Config()
    for name in ("access_log_format", "control_socket_disable", "logger_class"):
        config.set(name, getattr(gunicorn_conf, name))
    return config


def test_access_log_format_has_no_user_request_line_query_or_referer() -> None:
    fmt = _config().access_log_format
    for atom in ("%(u)s", "%(r)s", "%(q)s", "%(f)s", "{authorization}i"):
        assert atom not in fmt
    assert "%(U)s" in fmt  # the path, without its query


def test_the_control_socket_is_off() -> None:
    assert _config().control_socket_disable is True


def test_error_log_messages_lose_their_query_strings() -> None:
    line = "Invalid HTTP request line: 'GET /customers?api_key=bwk_secret HTTP/1.1'"
    assert redact_queries(line) == "Invalid HTTP request line: 'GET /customers?<redacted> HTTP/1.1'"
    logger = RedactingLogger(_config())
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger.error_log.addHandler(Keep())
    logger.error("Error handling request %s %s", "GET", "/x?token=abc")
    assert records == ["Error handling request GET /x?<redacted>"]
