"""The Redis broker: BROKER_VISIBILITY_TIMEOUT reaches the transport, and the transport
survives a broker loss (worker.infra.redis_transport)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from kombu import Connection, Queue

from worker.config import ConfigError, Settings
from worker.infra.celery_app import make_celery
from worker.infra.redis_transport import TRANSPORT


def test_visibility_timeout_reaches_the_redis_transport() -> None:
    settings = Settings.from_env(
        {"CELERY_BROKER_URL": "redis://127.0.0.1:1/0", "BROKER_VISIBILITY_TIMEOUT": "5"}
    )
    options = make_celery(settings).conf.broker_transport_options
    assert options["visibility_timeout"] == 5
    # Abandoned messages are looked for at least as often as the timeout asks.
    assert options["unacked_restore_interval"] * options["unacked_restore_throttle"] <= 5


def test_visibility_timeout_defaults_to_an_hour() -> None:
    settings = Settings.from_env({"CELERY_BROKER_URL": "redis://127.0.0.1:1/0"})
    assert make_celery(settings).conf.broker_transport_options["visibility_timeout"] == 3600


def test_visibility_timeout_must_be_a_positive_integer() -> None:
    with pytest.raises(ConfigError, match="BROKER_VISIBILITY_TIMEOUT"):
        Settings.from_env({"BROKER_VISIBILITY_TIMEOUT": "0"})


# -- worker.infra.redis_transport ------------------------------------------------------------------


def _one_unacked_message(url: str, transport: str) -> tuple[Connection, Any, Queue]:
    connection = Connection(url, transport=transport)
    queue = Queue(f"bw-test-{uuid.uuid4().hex}")
    channel = connection.channel()
    connection.Producer(channel).publish({"n": 1}, routing_key=queue.name, declare=[queue])
    message = queue(channel).get(no_ack=False)
    assert message is not None and message.payload == {"n": 1}
    return connection, channel, queue


def test_a_detached_channel_still_requeues_what_it_holds(redis_url: str) -> None:
    # What Celery 5.7 does on broker loss: collect() detaches the transport from its
    # connection, then a second close() of a half-closed channel requeues its unacked messages.
    connection, channel, queue = _one_unacked_message(redis_url, TRANSPORT)
    connection.transport.client = None
    channel.close()  # the stock transport raises AttributeError here
    with Connection(redis_url) as fresh:
        again = queue(fresh.default_channel).get(no_ack=True)
        assert again is not None and again.payload == {"n": 1}
        queue(fresh.default_channel).delete()


def test_only_plain_redis_urls_get_the_patched_transport() -> None:
    redis = Settings.from_env({"CELERY_BROKER_URL": "redis://127.0.0.1:1/0"})
    assert make_celery(redis).conf.broker_transport == TRANSPORT
    assert make_celery(Settings.from_env({})).conf.broker_transport is None
