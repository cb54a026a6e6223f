"""The operator CLI: every command in text and --json, and every bad input path.

Happy paths run in-process through ``worker.cli.main`` (the console-script entry point, so its
error formatting is covered too); the bad-input paths also run as a real ``python -m worker``
subprocess to prove the user sees one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from tests.support.cli import run_cli, run_cli_process
from worker.config import Settings
from worker.infra.db import get_engine


@pytest.fixture
def customer_id(cli) -> str:
    """A customer created through the CLI."""
    result = cli("customers", "create", "--email", "ada@example.com", "--name", "Ada", "--json")
    assert result.code == 0, result.err
    return result.json()["customer_id"]


# -- happy paths ---------------------------------------------------------------------------


def test_db_upgrade_and_downgrade_on_a_fresh_database(tmp_path: Path) -> None:
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    for args, expected in (
        (["db", "upgrade"], "database at head"),
        (["db", "downgrade", "base"], "database at base"),
        (["db", "upgrade"], "database at head"),
    ):
        result = run_cli(fresh, *args)
        assert result.code == 0, result.err
        assert result.out.strip() == expected


def test_customers_create_text_then_existing_email(cli) -> None:
    created = cli("customers", "create", "--email", "Bo@x.io", "--name", "Bo")
    again = cli("customers", "create", "--email", "bo@X.IO", "--name", "Other")
    assert created.code == again.code == 0
    verb, customer_id, email, name = created.out.split()
    assert (verb, email, name) == ("created", "<Bo@x.io>", "Bo")
    assert customer_id.startswith("cus_")
    assert again.out.split()[:2] == ["exists", customer_id]


def test_customers_create_json_has_the_api_shape(cli) -> None:
    result = cli(
        "customers", "create", "--email", "c@x.io", "--name", "C", "--phone-number", "+1", "--json"
    )
    data = result.json()
    assert data["customer_id"].startswith("cus_")
    assert {k: data[k] for k in ("business_id", "email", "name", "phone_number", "metadata")} == {
        "business_id": "bus_local",
        "email": "c@x.io",
        "name": "C",
        "phone_number": "+1",
        "metadata": {},
    }
    assert data["created_at"].endswith("Z")


def test_wallet_credit_debit_show_in_text(cli, customer_id: str) -> None:
    credited = cli("wallet", "credit", customer_id, "1000", "--currency", "USD", "--reason", "gift")
    debited = cli("wallet", "debit", customer_id, "250", "--currency", "usd")
    inr = cli("wallet", "credit", customer_id, "10000", "--currency", "INR")
    shown = cli("wallet", "show", customer_id)
    assert [r.code for r in (credited, debited, inr, shown)] == [0, 0, 0, 0]
    entry_id, rest = credited.out.strip().split(": ")
    assert entry_id.startswith("wle_") and rest == "USD balance 1000"
    assert debited.out.strip().endswith(": USD balance 750")
    assert shown.out.splitlines() == [
        "USD             750  pending_usage 0",
        "INR           10000  pending_usage 0",
        "total_balance_usd 870",
    ]


def test_wallet_commands_in_json(cli, customer_id: str) -> None:
    credited = cli("wallet", "credit", customer_id, "500", "--currency", "USD", "--json").json()
    debited = cli("wallet", "debit", customer_id, "200", "--currency", "USD", "--json").json()
    shown = cli("wallet", "show", customer_id, "--json").json()
    assert (credited["balance"], credited["currency"], credited["customer_id"]) == (
        500,
        "USD",
        customer_id,
    )
    assert debited["balance"] == 300
    assert [(w["currency"], w["balance"]) for w in shown["items"]] == [("USD", 300), ("INR", 0)]
    assert shown["total_balance_usd"] == 300


def test_wallet_debit_with_reused_key_is_refused_once_applied(cli, customer_id: str) -> None:
    cli("wallet", "credit", customer_id, "500", "--currency", "USD")
    args = ("wallet", "debit", customer_id, "100", "--currency", "USD", "--idempotency-key", "u1")
    first, second = cli(*args), cli(*args)
    assert first.code == 0
    assert second.code == 2
    assert second.err.startswith("billing-worker: Idempotency key 'u1' was already used")
    assert cli("wallet", "show", customer_id, "--json").json()["items"][0]["balance"] == 400


def test_ledger_list_text_json_filter_and_paging(cli, customer_id: str) -> None:
    for amount in ("1", "2", "3"):
        cli("wallet", "credit", customer_id, amount, "--currency", "USD", "--reason", "r" + amount)
    cli("wallet", "credit", customer_id, "9", "--currency", "INR")
    listed = cli("ledger", "list", customer_id)
    assert [line.split()[3] for line in listed.out.splitlines()] == ["+9", "+3", "+2", "+1"]
    assert listed.out.splitlines()[1].endswith("+3 USD -> 6 merchant_adjustment by cli r3")
    page = cli(
        "ledger", "list", customer_id, "--currency", "USD", "--page-size", "2",
        "--page-number", "1", "--json",
    ).json()  # fmt: skip
    assert [(e["amount"], e["reason"]) for e in page["items"]] == [(1, "r1")]
    assert set(page["items"][0]) >= {"id", "before_balance", "after_balance", "is_credit"}


def test_ledger_list_of_customer_without_entries(cli, customer_id: str) -> None:
    assert cli("ledger", "list", customer_id).out.strip() == "no entries"
    assert cli("ledger", "list", customer_id, "--json").json() == {"items": []}


def test_verify_ok_then_drift_exits_1(cli, settings: Settings, customer_id: str) -> None:
    cli("wallet", "credit", customer_id, "100", "--currency", "USD")
    ok = cli("verify")
    assert ok.code == 0
    assert ok.out.strip() == "OK: 2 wallets, 1 entries, 0 problem(s)"
    assert cli("verify", "--json").json() == {
        "ok": True,
        "wallets": 2,
        "entries": 1,
        "problems": [],
    }
    with get_engine(settings).begin() as conn:
        conn.execute(text("UPDATE wallets SET balance = 7 WHERE currency = 'USD'"))
    drift = cli("verify")
    assert drift.code == 1
    assert drift.out.splitlines() == [
        f"wallet {customer_id}/USD: balance 7 but ledger sums to 100",
        f"wallet {customer_id}/USD: balance 7 but its credit lots hold 100",
        "DRIFT: 2 wallets, 1 entries, 2 problem(s)",
    ]
    assert cli("verify", "--json").json()["ok"] is False


def test_apikeys_create_list_revoke(cli) -> None:
    created = cli("apikeys", "create", "--name", "backend", "--json").json()
    admin = cli("apikeys", "create", "--name", "ops", "--admin")
    assert created["key"].startswith("bwk_") and created["scopes"] == ["read"]
    admin_id, secret = admin.out.splitlines()[0].split()
    assert secret.startswith("bwk_")
    listed = cli("apikeys", "list", "--json").json()["items"]
    assert {(k["id"], k["name"], tuple(k["scopes"])) for k in listed} == {
        (created["id"], "backend", ("read",)),
        (admin_id, "ops", ("admin",)),
    }
    assert all("key" not in k for k in listed)
    assert cli("apikeys", "revoke", created["id"]).out.strip() == f"revoked {created['id']}"
    text_list = cli("apikeys", "list").out.splitlines()
    assert f"{created['id']} backend read revoked" in text_list
    assert f"{admin_id} ops admin active" in text_list


def test_apikeys_list_empty_and_revoke_unknown(cli) -> None:
    assert cli("apikeys", "list").out.strip() == "no keys"
    unknown = cli("apikeys", "revoke", "key_missing")
    assert (unknown.code, unknown.err.strip()) == (
        2,
        "billing-worker: API key key_missing not found",
    )


# -- bad input: one line on stderr, exit 2 ------------------------------------------------

BAD_INPUT = [
    (["wallet", "show", "cus_missing"], "Customer cus_missing not found"),
    (["ledger", "list", "cus_missing"], "Customer cus_missing not found"),
    (["wallet", "credit", "cus_missing", "5", "--currency", "USD"], "Customer cus_missing"),
    (["wallet", "credit", "{cid}", "abc", "--currency", "USD"], "amount: must be a whole number"),
    (["wallet", "debit", "{cid}", "-5", "--currency", "USD"], "amount: must be greater than 0"),
    (["wallet", "credit", "{cid}", "0", "--currency", "USD"], "amount: must be greater than 0"),
    (["wallet", "credit", "{cid}", "1.5", "--currency", "USD"], "amount: must be a whole number"),
    (["wallet", "credit", "{cid}", "5", "--currency", "XXX"], "currency: unsupported currency"),
    (["wallet", "debit", "{cid}", "5", "--currency", "USD"], "Insufficient balance"),
    (["ledger", "list", "{cid}", "--currency", "XXX"], "currency: unsupported currency"),
    (["ledger", "list", "{cid}", "--page-size", "500"], "page_size: must be an integer"),
    (["ledger", "list", "{cid}", "--page-size", "abc"], "'abc' is not a valid integer"),
    (["wallet", "credit", "{cid}", "5"], "Missing option '--currency'"),
    (["wallet", "frobnicate"], "No such command 'frobnicate'"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUT, ids=lambda v: " ".join(v)[:40])
def test_bad_input_in_process(cli, customer_id: str, args: list[str], message: str) -> None:
    result = cli(*(a.format(cid=customer_id) for a in args))
    assert result.code == 2
    assert result.out == ""
    assert len(result.err.splitlines()) == 1
    assert result.err.startswith("billing-worker: ")
    assert message in result.err


SUBPROCESS_CASES = [
    ["wallet", "show", "cus_missing"],
    ["wallet", "credit", "{cid}", "abc", "--currency", "USD"],
    ["wallet", "debit", "{cid}", "-5", "--currency", "USD"],
    ["wallet", "credit", "{cid}", "0", "--currency", "USD"],
    ["wallet", "credit", "{cid}", "1.5", "--currency", "USD"],
    ["wallet", "credit", "{cid}", "5", "--currency", "XXX"],
]


@pytest.mark.parametrize("args", SUBPROCESS_CASES, ids=lambda v: " ".join(v)[:40])
def test_bad_input_through_the_real_entry_point(
    settings: Settings, customer_id: str, args: list[str]
) -> None:
    done = run_cli_process(settings.database_url, *(a.format(cid=customer_id) for a in args))
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith("billing-worker: ")
    assert "Traceback" not in done.stderr


def test_real_entry_point_happy_path(settings: Settings, customer_id: str) -> None:
    done = run_cli_process(
        settings.database_url, "wallet", "credit", customer_id, "42", "--currency", "INR"
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.strip().endswith(": INR balance 42")
