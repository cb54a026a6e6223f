"""The inbox's dispatch table: (provider, event type) -> the function that applies it.

An event type missing here is stored and marked ``ignored`` ("no handler"). Adding a provider
event means adding its function in ``worker.payments.<provider>`` and one line here.
"""

from __future__ import annotations

from worker.inbox.handling import Handler, Laner, Prefetcher
from worker.payments import dodo, stripe

HANDLERS: dict[tuple[str, str], Handler] = {
    ("dodo", "payment.succeeded"): dodo.dodo_payment_succeeded,
    ("dodo", "refund.succeeded"): dodo.dodo_refund_succeeded,
    ("stripe", "payment_intent.succeeded"): stripe.stripe_payment_intent_succeeded,
    ("stripe", "checkout.session.completed"): stripe.stripe_checkout_session_completed,
    ("stripe", "charge.refunded"): stripe.stripe_charge_refunded,
    **{("dodo", event_type): dodo.dodo_dispute for event_type in dodo.DISPUTE_ACTIONS},
    ("stripe", "charge.dispute.created"): stripe.stripe_charge_dispute,
    ("stripe", "charge.dispute.closed"): stripe.stripe_charge_dispute,
}

# Batch preparation: one query for what a whole batch's handlers would each look up (which
# customers exist, which payments are new). What they note is a hint for this transaction
# only, never a substitute for a lock.
PREFETCHERS: list[Prefetcher] = [dodo.prefetch]

# Whose wallets an event changes, read from its payload (candidates, in the order the handler
# looks the customer up): ``worker.inbox.lanes`` keeps one customer's events in one batch at a
# time, in arrival order. A provider missing here, or a payload naming no one, gets a lane of
# its own (no order is kept with other events).
LANES: dict[str, Laner] = {"dodo": dodo.dodo_lane, "stripe": stripe.stripe_lane}
