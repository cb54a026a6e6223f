"""Settings never print a secret, and the bootstrap key is long enough outside the embedded
default."""

from __future__ import annotations

import pytest

from worker.config import ConfigError, Settings, redact_url

PG = "postgresql://billing:pg-password-1@db.internal/billing"
SECRETS = {
    "DATABASE_URL": PG,
    "CELERY_BROKER_URL": "redis://:redis-password-2@redis.internal:6379/0",
    "BILLING_API_KEY": "bootstrap-key-3-" + "x" * 32,
    "DODO_WEBHOOK_SECRET": "whsec_ZG9kby1zZWNyZXQtNA==",
    "STRIPE_WEBHOOK_SECRET": "whsec_stripe-secret-5",
    "NOTIFY_WEBHOOK_URL": "https://hooks.example.com/x",
    "NOTIFY_WEBHOOK_SECRET": "whsec_bm90aWZ5LXNlY3JldC02",
    "SMTP_URL": "smtps://mailer:smtp-password-7@mail.example.com",
    "NOTIFY_EMAIL_TO": "ops@example.com",
    "ENDPOINT_SECRET_KEY": "R2lGZXJuZXRLZXlGb3JUZXN0c09ubHlfXzMyYnl0ZXM=",
    "RATELIMIT_STORAGE_URL": "redis://:limits-password-8@redis.internal:6379/3",
}
PLAINTEXT = [
    "pg-password-1",
    "redis-password-2",
    SECRETS["BILLING_API_KEY"],
    SECRETS["DODO_WEBHOOK_SECRET"],
    SECRETS["STRIPE_WEBHOOK_SECRET"],
    SECRETS["NOTIFY_WEBHOOK_SECRET"],
    "smtp-password-7",
    SECRETS["ENDPOINT_SECRET_KEY"],
    "limits-password-8",
]


def test_settings_repr_redacts_every_secret() -> None:
    settings = Settings.from_env(SECRETS)
    text = repr(settings) + repr(settings.smtp) + str(settings)
    assert [s for s in PLAINTEXT if s in text] == []
    assert "billing:***@db.internal" in text and "mailer:***@mail.example.com" in text
    assert "api_key='<redacted>'" in text
    assert "hooks.example.com" in text  # what is not a secret is still shown


def test_a_malformed_smtp_url_is_named_without_its_password() -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"SMTP_URL": "imap://u:hunter2@h", "NOTIFY_EMAIL_TO": "a@b.c"})
    assert "SMTP_URL" in str(raised.value) and "hunter2" not in str(raised.value)


def test_a_malformed_notify_url_is_named_without_its_password() -> None:
    env = {"NOTIFY_WEBHOOK_URL": "ftp://u:hunter2@h/x", "NOTIFY_WEBHOOK_SECRET": "whsec_aGk="}
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(env)
    assert "NOTIFY_WEBHOOK_URL" in str(raised.value) and "hunter2" not in str(raised.value)


def test_redact_url_keeps_everything_but_the_password() -> None:
    assert redact_url("redis://:pw@h:6379/0") == "redis://:***@h:6379/0"
    assert redact_url("postgresql+psycopg://u:p%40ss@h/db") == "postgresql+psycopg://u:***@h/db"
    assert redact_url("sqlite:///billing.db") == "sqlite:///billing.db"


def test_a_short_bootstrap_key_stops_start_up_on_postgresql() -> None:
    with pytest.raises(ConfigError, match=r"^BILLING_API_KEY: must be at least 32 characters"):
        Settings.from_env({"DATABASE_URL": PG, "BILLING_API_KEY": "dev-key"})
    long_enough = "k" * 32
    assert Settings.from_env({"DATABASE_URL": PG, "BILLING_API_KEY": long_enough}).api_key


def test_the_quick_start_dev_key_works_on_the_embedded_default() -> None:
    assert Settings.from_env({"BILLING_API_KEY": "dev-key"}).api_key == "dev-key"


def test_the_short_key_error_does_not_print_the_key() -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"DATABASE_URL": PG, "BILLING_API_KEY": "s3cr3t-but-short"})
    assert "s3cr3t-but-short" not in str(raised.value)


def test_smtp_credentials_always_travel_over_tls() -> None:
    plain = Settings.from_env({"SMTP_URL": "smtp://u:p@h", "NOTIFY_EMAIL_TO": "a@b.c"}).smtp
    assert plain is not None and plain.starttls and not plain.ssl
    anonymous = Settings.from_env({"SMTP_URL": "smtp://h", "NOTIFY_EMAIL_TO": "a@b.c"}).smtp
    assert anonymous is not None and not anonymous.starttls
    with pytest.raises(ConfigError, match="refusing to send credentials over smtp://"):
        Settings.from_env({"SMTP_URL": "smtp://u:p@h?starttls=0", "NOTIFY_EMAIL_TO": "a@b.c"})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ALLOW_PRIVATE_WEBHOOK_URLS": "10.0.0.0/8,bogus"}, "ALLOW_PRIVATE_WEBHOOK_URLS: cannot"),
        ({"ENDPOINT_SECRET_KEY": "not-a-fernet-key"}, "ENDPOINT_SECRET_KEY: expected Fernet"),
        ({"AUTH_FAILURE_LIMIT": "0"}, "AUTH_FAILURE_LIMIT: expected a positive integer"),
        (
            {
                "NOTIFY_WEBHOOK_URL": "http://169.254.169.254/x",
                "NOTIFY_WEBHOOK_SECRET": "whsec_aGk=",
            },
            "NOTIFY_WEBHOOK_URL: 169.254.169.254 is not a public address",
        ),
    ],
)
def test_hardening_settings_fail_at_start_up(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match="^" + message):
        Settings.from_env(env)


def test_allowed_private_networks_parse() -> None:
    networks = Settings.from_env({"ALLOW_PRIVATE_WEBHOOK_URLS": "127.0.0.0/8, ::1"})
    assert [str(n) for n in networks.private_webhook_networks] == ["127.0.0.0/8", "::1/128"]
    every = Settings.from_env({"ALLOW_PRIVATE_WEBHOOK_URLS": "1"}).private_webhook_networks
    assert [str(n) for n in every] == ["0.0.0.0/0", "::/0"]
    loopback = {
        "NOTIFY_WEBHOOK_URL": "http://127.0.0.1:9/x",
        "NOTIFY_WEBHOOK_SECRET": "whsec_aGk=",
        "ALLOW_PRIVATE_WEBHOOK_URLS": "127.0.0.0/8",
    }
    assert Settings.from_env(loopback).notify_webhook is not None
