"""Charges, reversals and refunds to wallet (worker/charges/), through the core, HTTP and CLI."""
