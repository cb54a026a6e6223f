"""The wallet ledger: customers, wallets, and THE posting pipeline of append-only entries.

Every balance change is a batch of legs handed to ``post`` (``post_entry`` for one leg,
``post_own`` for one leg that is a transaction of its own). Functions take a ``Session`` and
never commit: the caller owns the transaction, so a ledger change and whatever caused it (an
inbox row, a usage batch, an outbox message) commit or roll back together.

- ``validation``: amounts, currencies, event types, pages;
- ``customers``, ``wallets``: the accounts, and the lock a posting takes on them;
- ``keys``: idempotency keys in two namespaces (client and system), fingerprints;
- ``legs``: what a posting is made of, and the one builder of entry rows;
- ``posting``: the pipeline and its one-statement path; ``transactional``: its transactional
  path; ``pg``: its PostgreSQL statements; ``alone``: the one-statement,
  autocommitted path of the API's ledger-entries call;
- ``entries``, ``verify``: reading the ledger and checking it.
"""

from worker.ledger.alone import post_alone, post_own
from worker.ledger.customers import (
    create_customer,
    ensure_wallets,
    find_customer_by_email,
    get_customer,
    list_customers,
    update_customer,
)
from worker.ledger.entries import list_entries
from worker.ledger.keys import (
    CLIENT,
    SYSTEM,
    IdempotencyKey,
    client_key,
    find_entry,
    fingerprint,
    system_key,
)
from worker.ledger.legs import Leg, OnShort, Posted, Replayed
from worker.ledger.posting import post, post_entry
from worker.ledger.validation import (
    MAX_CUSTOMER_ID_LENGTH,
    MAX_PAGE_SIZE,
    is_valid_customer_id,
    validate_amount,
    validate_currency,
    validate_customer_id,
    validate_page,
)
from worker.ledger.verify import VerifyReport, verify
from worker.ledger.wallets import (
    LockedWallet,
    get_wallet,
    get_wallets,
    lock_wallets,
    total_balance_usd,
)

__all__ = [
    "CLIENT",
    "MAX_CUSTOMER_ID_LENGTH",
    "MAX_PAGE_SIZE",
    "SYSTEM",
    "IdempotencyKey",
    "Leg",
    "LockedWallet",
    "OnShort",
    "Posted",
    "Replayed",
    "VerifyReport",
    "client_key",
    "create_customer",
    "ensure_wallets",
    "find_customer_by_email",
    "find_entry",
    "fingerprint",
    "get_customer",
    "get_wallet",
    "get_wallets",
    "is_valid_customer_id",
    "list_customers",
    "list_entries",
    "lock_wallets",
    "post",
    "post_alone",
    "post_entry",
    "post_own",
    "system_key",
    "total_balance_usd",
    "update_customer",
    "validate_amount",
    "validate_currency",
    "validate_customer_id",
    "validate_page",
    "verify",
]
