"""``GET /healthz``: 200 when every dependency answers, 503 naming what is down."""

from __future__ import annotations

from flask import Response, current_app, jsonify
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import text

from worker.db import get_engine

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
    healthy = all(v == "ok" for v in status.values())
    response = jsonify(status)
    response.status_code = 200 if healthy else 503
    return response
