"""Wallet-first checkout, reversals and refunds to wallet credit.

A checkout asks how much of an order the wallet covers and takes it in one step
(``checkout.charge``); cancelling the order gives the wallet part back (``reversals.reverse``);
support can refund a purchase into the wallet instead of to the card
(``refunds.refund_to_wallet``). ``views`` holds the answers, ``schemas`` their wire shapes.
Every balance change goes through ``worker.ledger``; these functions never commit.

Idempotency, per customer:

- a charge is identified by its ``idempotency_key`` (default ``charge:{order_id}``): a retry
  with the same key and parameters returns the same charge and never debits twice, even when
  the retries race; the same key with different parameters is ``IdempotencyKeyReused``.
- reversing "the rest" (no amount) is naturally idempotent: once nothing is left it is a
  no-op. A reversal of an explicit amount is idempotent only with an ``idempotency_key``;
  without one, each call reverses again. Either way the total reversed never exceeds what was
  applied (the charge row is locked, and a CHECK constraint stands behind it).
- a refund to wallet is credited once per ``refund_id`` (or per payment id + amount when no
  refund id is given).
"""

from worker.charges.checkout import charge, get_charge
from worker.charges.refunds import refund_to_wallet
from worker.charges.reversals import reverse
from worker.charges.views import MAX_ID_LENGTH, MAX_REASON_LENGTH, ChargeView, Refund, Reversal

__all__ = [
    "MAX_ID_LENGTH",
    "MAX_REASON_LENGTH",
    "ChargeView",
    "Refund",
    "Reversal",
    "charge",
    "get_charge",
    "refund_to_wallet",
    "reverse",
]
