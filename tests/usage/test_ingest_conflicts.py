"""An event_id already stored for another customer is reported in the ingest answer, never
silently dropped (issue 13, item 9)."""

from __future__ import annotations

import dodopayments
import httpx
import pytest
from sqlalchemy import select

from tests.support.usage import PRICING, new_customer
from webhooks import create_app
from worker import usage
from worker.config import Settings
from worker.models import UsageEvent
from worker.usage.ingest import CONFLICT_REASON


@pytest.fixture
def customers(tx) -> tuple[str, str]:
    """Two customers, each with 100 cents."""
    with tx() as s:
        return new_customer(s, "a@example.com", credit=100), new_customer(s, "b@example.com", 100)


def test_an_event_id_of_another_customer_is_a_conflict_and_not_stored(tx, customers) -> None:
    first, second = customers
    with tx() as s:
        assert usage.ingest(s, [usage.NewEvent("e1", first, "api_call")], pricing=PRICING) == (
            usage.Ingested(1, [])
        )
    with tx() as s:
        ingested = usage.ingest(
            s,
            [usage.NewEvent("e2", second, "api_call"), usage.NewEvent("e1", second, "api_call")],
            pricing=PRICING,
        )
    assert ingested == usage.Ingested(1, [usage.Conflict(1, "e1", CONFLICT_REASON)])
    with tx() as s:
        owners = dict(s.execute(select(UsageEvent.event_id, UsageEvent.customer_id)).all())
    assert owners == {"e1": first, "e2": second}


def test_a_retry_by_the_same_customer_is_no_conflict(tx, customers) -> None:
    first, _ = customers
    events = [usage.NewEvent("e1", first, "api_call"), usage.NewEvent("e2", first, "api_call")]
    with tx() as s:
        assert usage.ingest(s, events, pricing=PRICING).count == 2
    with tx() as s:
        assert usage.ingest(s, events, pricing=PRICING) == usage.Ingested(0, [])


def test_the_ingest_answer_lists_conflicts_and_the_sdk_still_parses_it(
    settings: Settings, customers, tmp_path
) -> None:
    from tests.support.usage import PRICING_TOML

    first, second = customers
    pricing = tmp_path / "pricing.toml"
    pricing.write_text(PRICING_TOML)
    app = create_app(settings.with_overrides(pricing_file=str(pricing)))
    app.config["USAGE_ENQUEUE"] = False
    web = app.test_client()
    auth = {"Authorization": "Bearer test-key"}
    event = {"event_id": "shared", "customer_id": first, "event_name": "api_call"}
    assert web.post("/events/ingest", json={"events": [event]}, headers=auth).json == {
        "ingested_count": 1,
        "conflicts": [],
    }
    r = web.post(
        "/events/ingest",
        json={"events": [{**event, "customer_id": second}]},
        headers=auth,
    )
    assert r.status_code == 200
    assert r.json == {
        "ingested_count": 0,
        "conflicts": [{"index": 0, "event_id": "shared", "reason": CONFLICT_REASON}],
    }
    http = httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://app")
    with dodopayments.DodoPayments(
        bearer_token="test-key", base_url="http://app", http_client=http, max_retries=0
    ) as sdk:
        answer = sdk.usage_events.ingest(
            events=[{"event_id": "shared", "customer_id": second, "event_name": "api_call"}]
        )
    assert answer.ingested_count == 0
