"""``wallet hold|capture|release|holds`` in text and --json, and their refusals: one line on
stderr, exit 2."""

from __future__ import annotations

from worker import ledger


def _customer(tx, amount: int = 1000) -> str:
    with tx() as s:
        cid = ledger.create_customer(s, email="cli-holds@example.com", name="C")[0].customer_id
        ledger.post(s, [ledger.Leg(cid, "USD", amount, is_credit=True)])
    return cid


def test_hold_capture_release_and_list(cli, tx) -> None:
    cid = _customer(tx)
    held = cli("wallet", "hold", cid, "300", "--currency", "USD", "--json")
    assert held.code == 0, held.err
    hold = held.json()
    assert (hold["status"], hold["amount"], hold["actor"]) == ("active", 300, "cli")
    shown = cli("wallet", "show", cid)
    assert "held 300  available 700" in shown.out
    captured = cli("wallet", "capture", cid, hold["hold_id"], "--amount", "120")
    assert captured.code == 0, captured.err
    assert captured.out.startswith(f"{hold['hold_id']} captured USD 300 captured 120 (wle_")
    other = cli("wallet", "hold", cid, "50", "--currency", "USD", "--json").json()
    released = cli("wallet", "release", cid, other["hold_id"], "--json")
    assert released.json()["status"] == "released"
    listed = cli("wallet", "holds", cid, "--status", "captured", "--json").json()
    assert [h["hold_id"] for h in listed["items"]] == [hold["hold_id"]]
    assert cli("wallet", "show", cid, "--json").json()["items"][0]["balance"] == 880


def test_refusals_are_one_line_on_stderr_with_exit_2(cli, tx) -> None:
    cid = _customer(tx, 100)
    short = cli("wallet", "hold", cid, "101", "--currency", "USD")
    assert (short.code, short.out) == (2, "")
    assert len(short.err.strip().splitlines()) == 1 and "Insufficient balance" in short.err
    hold = cli("wallet", "hold", cid, "10", "--currency", "USD", "--json").json()
    cli("wallet", "release", cid, hold["hold_id"])
    again = cli("wallet", "capture", cid, hold["hold_id"])
    assert again.code == 2 and "is released" in again.err
    missing = cli("wallet", "release", cid, "hold_nope")
    assert missing.code == 2 and "not found" in missing.err
    bad = cli("wallet", "hold", cid, "1.5", "--currency", "USD")
    assert bad.code == 2 and "amount" in bad.err
