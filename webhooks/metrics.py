"""``GET /metrics`` (Prometheus text format) and the per-request counters.

With PROMETHEUS_MULTIPROC_DIR set (required under gunicorn with several workers), samples
from every worker process are aggregated. Inbox and outbox lag are computed on each scrape.
With METRICS_TOKEN set, a scrape must present it (``Authorization: Bearer TOKEN``).

Every label value comes from a fixed set, never from the client: the route is the matched
rule's template (``unmatched`` otherwise), the method one of ``METHODS`` (``OTHER`` otherwise),
the status one the app chose. A label set that clients could grow (a raw path, any method
token) is a memory leak in every process and in Prometheus.
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

from flask import Flask, Response, current_app, g, request
from flask_openapi3 import APIBlueprint, Tag
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from worker.config import Settings
from worker.errors import Unauthorized
from worker.infra.db import transaction
from worker.infra.metrics import HTTP_LATENCY, HTTP_REQUESTS
from worker.models import InboxEvent, OutboxMessage, utcnow

log = logging.getLogger(__name__)
bp = APIBlueprint("metrics", __name__, abp_tags=[Tag(name="Operations")])

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class LagCollector(Collector):
    """Queue depth and age of the oldest waiting item, read from the database per scrape."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = utcnow()
        with transaction(self.settings) as s:
            inbox_count, inbox_oldest = s.execute(
                select(func.count(), func.min(InboxEvent.received_at)).where(
                    InboxEvent.status == "pending"
                )
            ).one()
            outbox_count, outbox_oldest = s.execute(
                select(func.count(), func.min(OutboxMessage.next_attempt_at)).where(
                    OutboxMessage.status == "pending", OutboxMessage.next_attempt_at <= now
                )
            ).one()
        for name, doc, count, oldest in (
            ("billing_inbox", "webhooks stored but not processed", inbox_count, inbox_oldest),
            ("billing_outbox", "notifications due but not delivered", outbox_count, outbox_oldest),
        ):
            yield GaugeMetricFamily(f"{name}_pending", f"Number of {doc}.", value=count or 0)
            lag = (now - _aware(oldest)).total_seconds() if oldest is not None else 0.0
            yield GaugeMetricFamily(
                f"{name}_lag_seconds", f"Age of the oldest of the {doc}.", value=max(lag, 0.0)
            )


def _aware(value):  # type: ignore[no-untyped-def]
    from datetime import UTC

    return value if value.tzinfo else value.replace(tzinfo=UTC)


@bp.get(
    "/metrics",
    responses={
        200: {
            "description": "Prometheus text exposition format.",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
)
def metrics() -> Response:
    """Prometheus metrics: with METRICS_TOKEN set, only for `Authorization: Bearer TOKEN`;
    without it, open (expose it only to your scraper)."""
    _require_token(current_app.config["SETTINGS"].metrics_token)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        body = generate_latest(registry)
    else:
        body = generate_latest(REGISTRY)
    lag = CollectorRegistry()
    lag.register(LagCollector(current_app.config["SETTINGS"]))
    try:
        body += generate_latest(lag)
    except Exception as exc:  # the database is down: still serve the counters
        log.warning("lag metrics unavailable: %s", exc)
    return Response(body, mimetype=CONTENT_TYPE_LATEST)


def _require_token(token: str | None) -> None:
    if token is None:
        return
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    # compare_digest: the comparison takes as long whatever prefix matches.
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        presented.strip().encode(), token.encode()
    ):
        raise Unauthorized("A valid metrics token is required (METRICS_TOKEN)")


def method_label(method: str) -> str:
    """The request's method as a label value: one of ``METHODS``, else ``OTHER``."""
    return method if method in METHODS else "OTHER"


def instrument(app: Flask) -> None:
    """Count every request by route template (not raw path: bounded label values).

    Each label set's child is looked up once per process and kept (``labels()`` takes a lock
    and builds a tuple every call): a request then costs one increment and one observation.
    The cache's keys are the label values, so it is as bounded as they are.
    """
    counters: dict[tuple[str, str, int], Any] = {}
    latencies: dict[str, Any] = {}

    @app.before_request
    def _start() -> None:
        g._metrics_started = time.perf_counter()

    @app.after_request
    def _count(response: Response) -> Response:
        rule = request.url_rule
        route = rule.rule if rule is not None else "unmatched"
        key = (route, method_label(request.method), response.status_code)
        counter = counters.get(key)
        if counter is None:
            counter = counters[key] = HTTP_REQUESTS.labels(
                route=route, method=key[1], status=key[2]
            )
        counter.inc()
        started = g.get("_metrics_started")
        if started is not None:
            latency = latencies.get(route)
            if latency is None:
                latency = latencies[route] = HTTP_LATENCY.labels(route=route)
            latency.observe(time.perf_counter() - started)
        return response
