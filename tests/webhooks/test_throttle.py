"""Failed authentications are throttled per client address; valid keys never are."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient
from sqlalchemy import event

from webhooks import create_app, throttle
from worker.access import apikeys
from worker.config import Settings
from worker.infra.db import get_engine, transaction

AUTH = {"Authorization": "Bearer test-key"}
WRONG = {"Authorization": "Bearer wrong-key"}
ATTACKER = {"REMOTE_ADDR": "203.0.113.7"}
NEIGHBOUR = {"REMOTE_ADDR": "203.0.113.8"}


@pytest.fixture
def client(settings: Settings) -> Iterator[FlaskClient]:
    """The app with a limit of 3 failures a minute per address."""
    yield create_app(settings.with_overrides(auth_failure_limit=3)).test_client()


def _fail(client: FlaskClient, environ: dict[str, str], times: int) -> list[int]:
    return [
        client.get("/customers", headers=WRONG, environ_base=environ).status_code
        for _ in range(times)
    ]


def test_failures_past_the_limit_answer_429_with_retry_after(client: FlaskClient) -> None:
    assert _fail(client, ATTACKER, 3) == [401, 401, 401]
    r = client.get("/customers", headers=WRONG, environ_base=ATTACKER)
    assert r.status_code == 429
    assert r.mimetype == "application/json"
    assert r.json["code"] == "TOO_MANY_FAILED_AUTHENTICATIONS"
    retry_after = int(r.headers["Retry-After"])
    assert 1 <= retry_after <= 60 and r.json["retry_after"] == retry_after


def test_a_valid_key_from_a_throttled_address_still_works(
    client: FlaskClient, settings: Settings
) -> None:
    with transaction(settings) as s:
        _, secret = apikeys.create_key(s, name="backend")
    _fail(client, ATTACKER, 5)
    assert client.get("/customers", headers=AUTH, environ_base=ATTACKER).status_code == 200
    stored = {"Authorization": f"Bearer {secret}"}
    assert client.get("/customers", headers=stored, environ_base=ATTACKER).status_code == 200
    # ...and the address is still throttled for failures.
    assert _fail(client, ATTACKER, 1) == [429]


def test_one_address_failing_does_not_throttle_another(client: FlaskClient) -> None:
    _fail(client, ATTACKER, 5)
    assert _fail(client, NEIGHBOUR, 3) == [401, 401, 401]


def test_ipv6_addresses_of_one_64_share_a_count(client: FlaskClient) -> None:
    first = {"REMOTE_ADDR": "2001:db8:1:2::1"}
    same_64 = {"REMOTE_ADDR": "2001:db8:1:2:ffff::9"}
    other_64 = {"REMOTE_ADDR": "2001:db8:1:3::1"}
    assert _fail(client, first, 3) == [401, 401, 401]
    assert _fail(client, same_64, 1) == [429]
    assert _fail(client, other_64, 1) == [401]


def test_routes_without_a_key_are_never_throttled(client: FlaskClient) -> None:
    _fail(client, ATTACKER, 5)
    health = client.get("/healthz", environ_base=ATTACKER).status_code
    assert health in (200, 503)  # its own answer: the broker may be down here


def test_storage_is_redis_in_production_and_memory_on_the_embedded_default() -> None:
    pg = "postgresql+psycopg://u@h/db"
    assert throttle.storage_url(Settings()) == "memory://"
    assert throttle.storage_url(Settings(broker_url="redis://r:6379/0")) == "redis://r:6379/0"
    explicit = Settings(database_url=pg, ratelimit_storage_url="redis://other:6379/2")
    assert throttle.storage_url(explicit) == "redis://other:6379/2"
    assert throttle.storage_url(Settings(database_url=pg, broker_url="amqp://x")) == "memory://"


def test_an_unreachable_storage_falls_back_to_counting_in_memory(settings: Settings) -> None:
    dead = settings.with_overrides(
        auth_failure_limit=2, ratelimit_storage_url="redis://127.0.0.1:9/0"
    )
    client = create_app(dead).test_client()
    assert _fail(client, ATTACKER, 3) == [401, 401, 429]
    assert client.get("/customers", headers=AUTH, environ_base=ATTACKER).status_code == 200


def _statements(settings: Settings, presented: str, times: int) -> int:
    statements: list[str] = []

    def record(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    engine = get_engine(settings)
    event.listen(engine, "before_cursor_execute", record)
    try:
        for _ in range(times):
            assert apikeys.authenticate(settings, presented) is None
    finally:
        event.remove(engine, "before_cursor_execute", record)
    return len([s for s in statements if "api_keys" in s])


def test_a_refused_key_is_looked_up_once_then_remembered(settings: Settings) -> None:
    unknown = "bwk_" + "Q" * 43
    assert _statements(settings, unknown, 5) == 1


def test_a_revoked_key_is_refused_without_further_lookups(settings: Settings) -> None:
    with transaction(settings) as s:
        key, secret = apikeys.create_key(s)
    assert apikeys.authenticate(settings, secret) is not None
    with transaction(settings) as s:
        apikeys.revoke_key(s, key.id)
    assert _statements(settings, secret, 4) == 1


def test_a_key_of_the_wrong_shape_costs_no_lookup(settings: Settings) -> None:
    for malformed in ("bwk_short", "bwk_" + "Q" * 44, "bwk_" + "Q" * 42 + "!", "dev-key"):
        assert _statements(settings, malformed, 2) == 0


def test_a_new_key_works_at_once_after_others_were_refused(settings: Settings) -> None:
    _statements(settings, "bwk_" + "Z" * 43, 2)
    with transaction(settings) as s:
        _, secret = apikeys.create_key(s)
    assert apikeys.authenticate(settings, secret) is not None
