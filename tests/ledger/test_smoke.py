from worker import ledger


def test_new_customer_has_zero_balance_wallet_per_currency(tx) -> None:
    with tx() as s:
        customer, created = ledger.create_customer(s, email="a@example.com", name="A")
    with tx() as s:
        wallets = ledger.get_wallets(s, customer.customer_id)
    assert created
    assert [(w.currency, w.balance) for w in wallets] == [("USD", 0), ("INR", 0)]
