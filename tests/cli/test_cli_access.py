"""``apikeys create --scope/--max-credit``, ``audit list``, and the audit entries of operator
commands (endpoints, tasks run, events replay, thresholds)."""

from __future__ import annotations

from cryptography.fernet import Fernet

from tests.support.cli import run_cli_process
from worker import inbox


def test_apikeys_create_with_scopes_and_max_credit(cli) -> None:
    created = cli(
        "apikeys", "create", "--name", "billing", "--scope", "read", "--scope", "CREDIT",
        "--max-credit", "5000", "--json",
    ).json()  # fmt: skip
    assert (created["scopes"], created["max_credit"], created["created_by"]) == (
        ["read", "credit"],
        5000,
        "cli",
    )
    assert created["key"].startswith("bwk_")
    text = cli("apikeys", "list").out.splitlines()
    assert text == [f"{created['id']} billing read,credit max_credit=5000 active"]


def test_apikeys_create_refuses_unknown_scopes_and_bad_limits_on_one_line(database_url) -> None:
    for args, message in (
        (["--scope", "write"], "scope: unknown scope(s) write"),
        (["--max-credit", "0"], "max_credit:"),
        (["--max-credit", "1.5"], "max_credit: must be a whole number"),
    ):
        run = run_cli_process(database_url, "apikeys", "create", *args)
        assert run.returncode == 2, run.stderr
        assert run.stderr.count("\n") == 1 and message in run.stderr, run.stderr
        assert "Traceback" not in run.stderr


def test_audit_list_shows_operator_actions_newest_first(cli, tx, monkeypatch) -> None:
    # Outside the embedded default an endpoint's secret can only be stored sealed.
    monkeypatch.setenv("ENDPOINT_SECRET_KEY", Fernet.generate_key().decode())
    key = cli("apikeys", "create", "--scope", "debit", "--json").json()
    cli("apikeys", "revoke", key["id"])
    endpoint = cli("endpoints", "add", "https://hooks.example.com/billing", "--json").json()
    cli("endpoints", "remove", endpoint["id"])
    ran = cli("tasks", "run", "check-low-balances", "--sync")
    assert ran.code == 0, ran.err
    customer = cli(
        "customers", "create", "--email", "ada@example.com", "--name", "Ada", "--json"
    ).json()
    cli("customers", "set-threshold", customer["customer_id"], "USD", "500")
    with tx() as s:
        event_id = inbox.record_event(
            s,
            provider="dodo",
            provider_event_id="msg_1",
            event_type="payment.succeeded",
            payload={"type": "payment.succeeded", "data": "oops"},
        )
    with tx() as s:
        inbox.process_event(s, event_id)
    cli("events", "replay", str(event_id))

    listed = cli("audit", "list", "--json").json()["items"]
    assert [(e["action"], e["target"], e["actor"]) for e in listed] == [
        ("inbox.replayed", str(event_id), "cli"),
        ("customer.threshold_set", customer["customer_id"], "cli"),
        ("task.run", "check-low-balances", "cli"),
        ("endpoint.removed", endpoint["id"], "cli"),
        ("endpoint.created", endpoint["id"], "cli"),
        ("apikey.revoked", key["id"], "cli"),
        ("apikey.created", key["id"], "cli"),
    ]
    assert listed[0]["details"] == {
        "provider": "dodo",
        "event_type": "payment.succeeded",
        "was": "failed",
    }
    assert listed[1]["details"] == {"currency": "USD", "threshold": 500}
    assert "secret" not in str(listed)  # the endpoint's signing secret is never audited
    limited = cli("audit", "list", "--limit", "2").out.splitlines()
    assert len(limited) == 2 and "inbox.replayed" in limited[0]
    only = cli("audit", "list", "--action", "apikey.created", "--json").json()["items"]
    assert [e["target"] for e in only] == [key["id"]]


def test_audit_list_when_empty(cli) -> None:
    assert cli("audit", "list").out.strip() == "no audit entries"


def test_cli_changes_record_cli_as_their_actor(cli) -> None:
    customer_id = cli(
        "customers", "create", "--email", "bo@example.com", "--name", "Bo", "--json"
    ).json()["customer_id"]
    cli("wallet", "credit", customer_id, "100", "--currency", "USD")
    cli("wallet", "charge", customer_id, "40", "--currency", "USD", "--order-id", "o1")
    entries = cli("ledger", "list", customer_id, "--json").json()["items"]
    assert [(e["event_type"], e["actor"]) for e in entries] == [
        ("payment", "cli"),
        ("merchant_adjustment", "cli"),
    ]
