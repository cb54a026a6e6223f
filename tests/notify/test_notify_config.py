"""Notification settings are parsed once and fail loudly, naming the variable."""

from __future__ import annotations

import pytest

from worker.config import ConfigError, Settings


def test_thresholds_and_schedule_parse() -> None:
    s = Settings.from_env(
        {"LOW_BALANCE_THRESHOLDS": "USD=1000, inr=80000", "NOTIFY_RETRY_SCHEDULE": "1,2.5"}
    )
    assert s.low_balance_threshold_map == {"USD": 1000, "INR": 80000}
    assert s.notify_retry_delays == (1.0, 2.5)
    assert s.notify_webhook is None and s.smtp is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LOW_BALANCE_THRESHOLDS": "USD=10.5"}, "LOW_BALANCE_THRESHOLDS: cannot parse 'USD=10.5'"),
        ({"LOW_BALANCE_THRESHOLDS": "XXX=5"}, "LOW_BALANCE_THRESHOLDS: cannot parse 'XXX=5'"),
        ({"NOTIFY_RETRY_SCHEDULE": "5,soon"}, "NOTIFY_RETRY_SCHEDULE: 'soon'"),
        ({"NOTIFY_WEBHOOK_URL": "http://h/x"}, "NOTIFY_WEBHOOK_SECRET: required"),
        (
            {"NOTIFY_WEBHOOK_URL": "http://h/x", "NOTIFY_WEBHOOK_SECRET": "hunter2"},
            "NOTIFY_WEBHOOK_SECRET: expected a whsec_",
        ),
        (
            {"NOTIFY_WEBHOOK_URL": "ftp://h/x", "NOTIFY_WEBHOOK_SECRET": "whsec_aGVsbG8="},
            "NOTIFY_WEBHOOK_URL: expected an http(s) URL",
        ),
        ({"SMTP_URL": "mail.example.com", "NOTIFY_EMAIL_TO": "a@b.c"}, "SMTP_URL: expected"),
        ({"SMTP_URL": "smtp://h:25", "NOTIFY_EMAIL_TO": "nobody"}, "NOTIFY_EMAIL_TO: expected"),
        ({"NOTIFY_DISPATCH_SECONDS": "0"}, "NOTIFY_DISPATCH_SECONDS: expected a positive"),
    ],
)
def test_malformed_settings_fail_at_start_up(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        Settings.from_env(env)


def test_set_threshold_cli_overrides_and_clears(settings: Settings, cli) -> None:
    from worker import ledger
    from worker.infra.db import transaction

    with transaction(settings) as s:
        cid = ledger.create_customer(s, email="t@example.com", name="T")[0].customer_id
    done = cli("customers", "set-threshold", cid, "usd", "500")
    assert done.code == 0, done.err
    with transaction(settings) as s:
        assert ledger.get_customer(s, cid).low_balance_thresholds == {"USD": 500}
    cli("customers", "set-threshold", cid, "USD", "--clear")
    with transaction(settings) as s:
        assert ledger.get_customer(s, cid).low_balance_thresholds is None
    bad = cli("customers", "set-threshold", cid, "USD", "5.5")
    assert bad.code != 0 and "amount: must be a whole number" in bad.err
