"""``billing-worker wallet charge|reverse|refund|charge-show`` on both backends."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.support.charges import assert_verified, make_customer, paid, usd
from tests.support.cli import run_cli_process


@pytest.fixture(autouse=True)
def _refund_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refunds to wallet up to 10,000 minor units (the CLI reads the cap from the environment)."""
    monkeypatch.setenv("WALLET_REFUND_MAX", "10000")


def test_charge_reverse_and_show_print_the_api_json(cli, tx) -> None:
    cid = make_customer(tx, 1200)
    code, out, _ = cli("wallet", "charge", cid, "3000", "--currency", "USD", "--order-id", "o1",
                       "--json")  # fmt: skip
    assert code == 0
    charge = json.loads(out)
    assert (charge["applied_amount"], charge["remaining_amount"]) == (1200, 1800)

    code, out, _ = cli("wallet", "charge", cid, "3000", "--currency", "USD", "--order-id", "o1")
    assert code == 0 and out.startswith(f"replayed {charge['charge_id']}")
    assert usd(tx, cid) == 0

    code, out, _ = cli("wallet", "reverse", cid, charge["charge_id"], "--amount", "200", "--json")
    assert (code, json.loads(out)["reversed_now"]) == (0, 200)
    code, out, _ = cli("wallet", "reverse", cid, charge["charge_id"], "--json")
    assert (code, json.loads(out)["reversed_now"]) == (0, 1000)

    code, out, _ = cli("wallet", "charge-show", cid, charge["charge_id"], "--json")
    shown = json.loads(out)
    assert (shown["applied_amount"], shown["reversed_amount"], shown["reversible_amount"]) == (
        1200,
        1200,
        0,
    )
    assert [e["event_type"] for e in shown["entries"]] == [
        "payment",
        "payment_reversal",
        "payment_reversal",
    ]
    assert usd(tx, cid) == 1200
    assert_verified(tx)


def test_refund_is_credited_once_and_capped(cli, tx) -> None:
    cid = make_customer(tx)
    paid(tx, cid, 5000)
    args = ("wallet", "refund", cid, "2500", "--currency", "USD", "--payment-id", "pay_1",
            "--refund-id", "rfd_1")  # fmt: skip
    first = cli(*args, "--json")
    again = cli(*args)
    assert first[0] == again[0] == 0
    assert json.loads(first[1])["entry"]["event_type"] == "refund"
    assert again[1].startswith("replayed ")
    assert usd(tx, cid) == 2500

    code, out, err = cli("wallet", "refund", cid, "10001", "--currency", "USD",
                         "--payment-id", "pay_2")  # fmt: skip
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and "WALLET_REFUND_MAX (10000" in err


def test_refund_past_the_payment_is_one_line_naming_what_is_left(cli, tx) -> None:
    cid = make_customer(tx)
    paid(tx, cid, 3000)
    args = ("wallet", "refund", cid, "2000", "--currency", "USD", "--payment-id", "pay_1")
    assert cli(*args)[0] == 0
    code, out, err = cli(*args[:3], "1001", *args[4:])
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and "exceeds the 1000 left to refund of payment pay_1" in err
    code, out, err = cli(*args[:-1], "pay_unknown")
    assert (code, out) == (2, "")
    assert err.startswith("billing-worker: payment_id: 'pay_unknown' is not a payment of")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("charge", "{cid}", "12.5", "--currency", "USD", "--order-id", "o"), "amount:"),
        (("charge", "{cid}", "-5", "--currency", "USD", "--order-id", "o"), "amount:"),
        (("charge", "{cid}", "100", "--currency", "EUR", "--order-id", "o"), "currency:"),
        (("charge", "{cid}", "5000", "--currency", "USD", "--order-id", "o", "--no-partial"),
         "Insufficient balance"),
        (("reverse", "{cid}", "wch_nope"), "wch_nope not found"),
        (("reverse", "{cid}", "wch_nope", "--amount", "x"), "amount:"),
        (("charge", "cus_nope", "100", "--currency", "USD", "--order-id", "o"), "not found"),
        (("refund", "{cid}", "100", "--currency", "USD"), "--payment-id"),
    ],
)  # fmt: skip
def test_bad_input_is_one_stderr_line_and_exit_2(cli, tx, args, message) -> None:
    cid = make_customer(tx, 1000)
    code, out, err = cli("wallet", *(a.format(cid=cid) for a in args))
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and err.startswith("billing-worker: ")
    assert message in err
    assert usd(tx, cid) == 1000


def test_real_process_charge_exits_0_then_2_on_a_reused_key(database_url, tx) -> None:
    cid = make_customer(tx, 500)

    def run(*args: str) -> subprocess.CompletedProcess:
        return run_cli_process(database_url, "wallet", "charge", cid, *args)

    ok = run("300", "--currency", "USD", "--order-id", "o1", "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["applied_amount"] == 300
    reused = run("400", "--currency", "USD", "--order-id", "o1")
    assert reused.returncode == 2
    assert reused.stderr.strip().splitlines() == [
        "billing-worker: Idempotency key 'charge:o1' was already used with different amount"
    ]
    assert usd(tx, cid) == 200
