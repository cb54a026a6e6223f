"""Payments: provider-neutral top-up bookkeeping (``topups``) and one module per provider
payload (``dodo``, ``stripe``). ``worker.inbox.handlers`` maps each event type to them.
"""

# worker.inbox first: its handler map imports worker.payments.dodo and .stripe, which must not
# be half-imported at that moment (as they would be if one of them were imported first).
import worker.inbox  # noqa: F401
from worker.payments.topups import (
    KNOWN_CUSTOMERS,
    UNSEEN_PAYMENTS,
    credit_topup,
    ignore_payment,
    reverse_topup,
)

__all__ = ["KNOWN_CUSTOMERS", "UNSEEN_PAYMENTS", "credit_topup", "ignore_payment", "reverse_topup"]
