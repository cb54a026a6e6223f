"""The ledger (worker/ledger/): posting pipeline, keys, customers, wallets, verify."""
