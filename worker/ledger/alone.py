"""A leg that is a transaction of its own (the ledger-entries API call): usually ONE
autocommitted statement (a debit: the wallet's lock, then one statement, sent together), with
no Session.

PostgreSQL runs a single statement atomically, so the wallet update and the entry commit
together: a third of the statements, the row lock held for one statement. The statement
commits only when nothing else has to commit with the entry: the wallet's low-balance state
stays right (a crossing needs ``reconcile`` in the transaction), the customer has no threshold
overrides, and no one subscribes to ``wallet.ledger_entry.created`` (its outbox row commits
with the entry). Otherwise it writes nothing and a transaction posts the leg in full.
"""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError

from worker import notify
from worker.config import Settings
from worker.errors import DuplicateEntry
from worker.infra.db import autocommit_first, autocommit_rows, get_engine, transaction
from worker.infra.metrics import LEDGER_ENTRIES
from worker.ledger import pg
from worker.ledger.legs import Leg, Posted, prepare
from worker.ledger.objects import snapshot, transient
from worker.ledger.posting import one_statement, post, statement_result, statement_values
from worker.ledger.wallets import get_wallet, wallet_columns
from worker.models import LedgerEntry, Wallet
from worker.notify.lowbalance import WalletState


def post_own(settings: Settings, leg: Leg) -> Posted:
    """Post ``leg`` in a transaction of its own and commit it; typed errors as ``post``.

    A ``DuplicateEntry`` carries the wallet as it stands (``wallet``), for the answer.
    """
    posted = post_alone(settings, leg)
    if posted is not None:
        return posted
    try:
        # The transaction holds only this leg, so it needs no savepoint (two round trips
        # saved) ...
        return _in_transaction(settings, leg, savepoint=False)
    except IntegrityError:
        # ... and when a concurrent request with the same key wins the unique index, the
        # transaction rolled back whole; a new one finds the key used and answers for it.
        return _in_transaction(settings, leg, savepoint=True)


def _in_transaction(settings: Settings, leg: Leg, *, savepoint: bool) -> Posted:
    with transaction(settings) as session:
        try:
            posted = post(session, [leg], savepoint=savepoint)[0]
        except DuplicateEntry as duplicate:
            wallet = get_wallet(session, leg.customer_id, duplicate.entry.currency)
            duplicate.wallet = snapshot(wallet)
            raise
        assert isinstance(posted, Posted)
        posted.wallet  # built while the session is open  # noqa: B018
        return posted


def post_alone(settings: Settings, leg: Leg) -> Posted | None:
    """Post ``leg`` as one autocommitted statement (a debit: its wallet's lock and then the
    statement, in one round trip), or return None having written nothing (funds short, key
    used, no wallet yet, a low-balance crossing, SQLite, ...): the caller then posts it in a
    transaction, which also says why.

    Database errors other than a lost race for the key are raised (``OperationalError`` and
    the like): a connection lost after the statement was sent leaves its outcome unknown (the
    server may have committed), so posting again could post twice; the client retries with
    its idempotency key, as it would after a lost COMMIT.
    """
    if (
        get_engine(settings).dialect.name != "postgresql"
        or not one_statement(leg)
        or notify.wants(settings, "wallet.ledger_entry.created")
    ):
        return None
    leg = prepare(settings, leg)
    values = statement_values(settings, leg)
    values["threshold"] = settings.low_balance_threshold_map.get(leg.currency)
    keyed = leg.key is not None
    try:
        if leg.is_credit:
            row = autocommit_first(settings, pg.SINGLE[(keyed, True)], values)
        else:
            # The lock, then the debit that reads the lots after it: one round trip.
            row = autocommit_rows(
                settings, [(pg.LOCK_ONE, values), (pg.DEBIT[(keyed, True)], values)]
            )[1]
    except IntegrityError:
        # A lost race for the key: the statement failed and wrote nothing.
        return None
    if row is None:
        return None
    entry, wallet = statement_result(row, values)
    LEDGER_ENTRIES.labels(
        direction="credit" if leg.is_credit else "debit", event_type=leg.event_type
    ).inc()
    state = WalletState(
        leg.customer_id,
        leg.currency,
        wallet.balance,
        wallet.low_state,
        wallet.low_balance_thresholds,
        wallet.held,
        wallet.depleted,
    )
    detached = transient(Wallet, wallet_columns(wallet, entry["created_at"]))
    return Posted(entry=transient(LedgerEntry, entry), state=state, make_wallet=lambda: detached)
