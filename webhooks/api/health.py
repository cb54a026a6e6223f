"""``GET /healthz``: 200 when every dependency answers, 503 naming what is down."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from flask import Response, current_app, jsonify
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import text

from worker.infra.celery_app import DEFAULT_BROKER_URL
from worker.infra.db import get_engine

BROKER_TIMEOUT = 2.0
log = logging.getLogger(__name__)

bp = APIBlueprint("health", __name__, abp_tags=[Tag(name="Operations")])


class HealthOut(BaseModel):
    """Each dependency: ``ok`` or ``down: <reason>``."""

    model_config = ConfigDict(extra="allow")
    database: str = Field(description="`ok`, or `down: <error class>`.", examples=["ok"])


class HealthDownOut(HealthOut):
    model_config = ConfigDict(
        extra="allow", openapi_extra={"description": "A dependency is down (named in the body)."}
    )


@bp.get("/healthz", responses={200: HealthOut, 503: HealthDownOut})
def healthz() -> Response:
    """Liveness and dependencies (no authentication)."""
    settings = current_app.config["SETTINGS"]
    status = {"database": "ok"}
    try:
        with get_engine(settings).connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:  # any failure means "down"; the reason goes in the body
        status["database"] = f"down: {type(exc).__name__}"
    status["broker"] = _broker_status(settings)
    healthy = all(v == "ok" for v in status.values())
    response = jsonify(status)
    response.status_code = 200 if healthy else 503
    return response


class _BrokerProbe:
    """One broker connection per process and URL, kept open between health checks.

    A new connection per ``/healthz`` costs the broker a TCP (and TLS) handshake per probe,
    and a load balancer probing every second from many places adds up to a connection storm
    (or a broker's client limit). The connection is reused until a check fails; then it is
    dropped and the next check connects afresh, so a broker that came back is seen as ``ok``.
    kombu connections are not thread-safe: checks take turns (each is bounded by the timeout).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connections: dict[tuple[int, str], Any] = {}

    def status(self, url: str) -> str:
        from kombu import Connection

        key = (os.getpid(), url)  # a forked worker never uses its parent's socket
        with self._lock:
            conn = self._connections.get(key)
            if conn is None:
                options = (
                    {"socket_connect_timeout": BROKER_TIMEOUT, "socket_timeout": BROKER_TIMEOUT}
                    if url.startswith("redis")
                    else {}
                )
                conn = Connection(url, connect_timeout=BROKER_TIMEOUT, transport_options=options)
            try:
                conn.ensure_connection(
                    max_retries=1, interval_start=0, interval_step=0, timeout=BROKER_TIMEOUT
                )
                client = getattr(conn.default_channel, "client", None)
                if client is not None and hasattr(client, "ping"):
                    client.ping()
            except Exception as exc:  # any failure means "down"; the reason goes in the body
                self._connections.pop(key, None)
                _release(conn)
                return f"down: {type(exc).__name__}"
            self._connections[key] = conn
            return "ok"


def _release(conn: Any) -> None:
    try:
        conn.release()
    except Exception as exc:  # a broken connection may fail to close; it is dropped anyway
        log.debug("closing a failed broker connection: %s", exc)


_PROBE = _BrokerProbe()


def _broker_status(settings) -> str:  # type: ignore[no-untyped-def]
    """The Celery broker answers, within a short timeout (a dead broker must not hang us)."""
    return _PROBE.status(settings.broker_url or DEFAULT_BROKER_URL)
