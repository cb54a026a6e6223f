"""``GET /healthz``: 200 when every dependency answers, 503 naming what is down."""

from __future__ import annotations

from flask import Response, current_app, jsonify
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import text

from worker.infra.celery_app import DEFAULT_BROKER_URL
from worker.infra.db import get_engine

BROKER_TIMEOUT = 2.0

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


def _broker_status(settings) -> str:  # type: ignore[no-untyped-def]
    """Connect to the Celery broker with a short timeout (a dead broker must not hang us)."""
    from kombu import Connection

    url = settings.broker_url or DEFAULT_BROKER_URL
    options = (
        {"socket_connect_timeout": BROKER_TIMEOUT, "socket_timeout": BROKER_TIMEOUT}
        if url.startswith("redis")
        else {}
    )
    try:
        with Connection(url, connect_timeout=BROKER_TIMEOUT, transport_options=options) as conn:
            conn.ensure_connection(
                max_retries=1, interval_start=0, interval_step=0, timeout=BROKER_TIMEOUT
            )
            client = getattr(conn.default_channel, "client", None)
            if client is not None and hasattr(client, "ping"):
                client.ping()
    except Exception as exc:  # any failure means "down"; the reason goes in the body
        return f"down: {type(exc).__name__}"
    return "ok"
