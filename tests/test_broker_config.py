"""BROKER_VISIBILITY_TIMEOUT: read from the environment and handed to the Redis transport."""

from __future__ import annotations

import pytest

from worker.celery import make_celery
from worker.config import ConfigError, Settings


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
