"""Endpoint signing secrets are sealed at rest with ENDPOINT_SECRET_KEY (Fernet)."""

from __future__ import annotations

import logging

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text

from worker import notify
from worker.config import Settings
from worker.errors import ValidationFailed
from worker.infra.db import transaction
from worker.models import WebhookEndpoint, new_id, utcnow
from worker.notify import sealing

URL = "https://hooks.example.com/billing"
KEY_A = Fernet.generate_key().decode()
KEY_B = Fernet.generate_key().decode()


def _stored(settings: Settings, endpoint_id: str) -> str:
    with transaction(settings) as session:
        return session.execute(
            text("SELECT secret FROM webhook_endpoints WHERE id = :id"), {"id": endpoint_id}
        ).scalar_one()


def _add(settings: Settings) -> tuple[str, str]:
    with transaction(settings) as session:
        endpoint = notify.add_endpoint(session, URL)
        return endpoint.id, notify.endpoint_secret(settings, endpoint)


def test_a_new_secret_is_stored_sealed_and_opens_with_the_key(settings: Settings) -> None:
    sealed = settings.with_overrides(endpoint_secret_key=KEY_A)
    endpoint_id, secret = _add(sealed)
    stored = _stored(sealed, endpoint_id)
    assert secret.startswith("whsec_") and secret not in stored
    assert stored.startswith("fernet:") and len(stored) <= 255
    assert sealing.open_secret(sealed, stored) == secret


def test_a_sealed_secret_does_not_open_without_its_key(settings: Settings) -> None:
    endpoint_id, _ = _add(settings.with_overrides(endpoint_secret_key=KEY_A))
    stored = _stored(settings, endpoint_id)
    with pytest.raises(sealing.SecretUnreadable):
        sealing.open_secret(settings.with_overrides(endpoint_secret_key=KEY_B), stored)
    with pytest.raises(sealing.SecretUnreadable):
        sealing.open_secret(settings, stored)


def test_plaintext_secrets_from_before_keep_working_and_get_sealed(settings: Settings) -> None:
    legacy = "whsec_bGVnYWN5LXNlY3JldC1mcm9tLWJlZm9yZQ=="
    with transaction(settings) as session:
        session.add(
            WebhookEndpoint(
                id=new_id("ep", 16), url=URL, secret=legacy, events="*", enabled=True,
                created_at=utcnow(),
            )
        )  # fmt: skip
    sealed = settings.with_overrides(endpoint_secret_key=KEY_A)
    with transaction(sealed) as session:
        (endpoint,) = notify.list_endpoints(session)
        assert notify.endpoint_secret(sealed, endpoint) == legacy
        assert notify.seal_secrets(session) == 1
    stored = _stored(sealed, endpoint.id)
    assert stored.startswith("fernet:") and sealing.open_secret(sealed, stored) == legacy


def test_rotation_reseals_under_the_first_key(settings: Settings) -> None:
    old = settings.with_overrides(endpoint_secret_key=KEY_A)
    endpoint_id, secret = _add(old)
    rotating = settings.with_overrides(endpoint_secret_key=f"{KEY_B},{KEY_A}")
    with transaction(rotating) as session:
        notify.seal_secrets(session)
    new_only = settings.with_overrides(endpoint_secret_key=KEY_B)
    assert sealing.open_secret(new_only, _stored(settings, endpoint_id)) == secret


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_outside_the_embedded_default_a_secret_needs_a_key(settings: Settings) -> None:
    with transaction(settings) as session, pytest.raises(ValidationFailed) as raised:
        notify.add_endpoint(session, URL)
    assert raised.value.field == "ENDPOINT_SECRET_KEY"


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_the_embedded_default_without_a_key_stores_plaintext_with_a_warning(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="worker.notify.sealing"):
        endpoint_id, secret = _add(settings)
    assert _stored(settings, endpoint_id) == secret
    assert "set ENDPOINT_SECRET_KEY" in caplog.text


def test_the_cli_shows_the_secret_once_and_seals_on_request(
    cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENDPOINT_SECRET_KEY", KEY_A)
    added = cli("endpoints", "add", URL, "--json")
    assert added.code == 0, added.err
    assert added.json()["secret"].startswith("whsec_")
    assert "whsec_" not in cli("endpoints", "list").out
    monkeypatch.setenv("ENDPOINT_SECRET_KEY", f"{KEY_B},{KEY_A}")
    sealed = cli("endpoints", "seal-secrets")
    assert sealed.code == 0 and sealed.out.startswith("1 endpoint secret(s) sealed")
    monkeypatch.setenv("ENDPOINT_SECRET_KEY", "")
    wrong = cli("endpoints", "seal-secrets")
    assert wrong.code == 2 and wrong.err.startswith("billing-worker: ENDPOINT_SECRET_KEY")
