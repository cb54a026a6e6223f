"""PostgreSQL's statements for posting, both built from the one column list.

- ``single(keyed, alone)``: one leg as ONE statement: the conditional UPDATE of the wallet and
  the INSERT of its entry in one CTE, so the row lock is held for one statement (and its
  commit). Under READ COMMITTED a concurrent writer waits on the row lock, then re-checks the
  WHERE against the committed balance, so two debits can never both pass on the same funds.
  When it matches no row (wallet missing, funds short, balance cap, the key used, or for
  ``alone`` a low-balance crossing) nothing is written and the transactional path works out
  which it was. NOT EXISTS only saves a round trip for fresh keys; the unique index still
  decides a race.
- ``BATCH``: the transactional path's write for wallets it has locked and legs it has already
  judged: every wallet's change and every entry in one statement, the rows travelling as one
  array per column (constant statement text, cached by PostgreSQL and SQLAlchemy, where a
  VALUES list or an executemany would be compiled or sent row by row).

The CHECK constraints stand behind both.
"""

from __future__ import annotations

from sqlalchemy import text

from worker.ledger.legs import ENTRY_COLUMNS
from worker.money import MAX_AMOUNT

# Nullable text parameters need a type for PostgreSQL when they arrive as NULL.
_CASTS = {"reason": "::text", "reference_object_id": "::text", "idempotency_key": "::text"}
_COMPUTED = {"before_balance": "w.balance - %(delta)s", "after_balance": "w.balance"}

_SINGLE = """
WITH w AS (
    UPDATE wallets SET balance = balance + %(delta)s, updated_at = %(created_at)s
    WHERE customer_id = %(customer_id)s AND currency = %(currency)s
      AND balance + %(delta)s >= 0 AND balance + %(delta)s <= {max_amount}{key_check}{alone}
    RETURNING balance, pending_usage_scaled, low_state, created_at
), e AS (
    INSERT INTO ledger_entries ({columns})
    SELECT {values}
    FROM w
    RETURNING seq
)
SELECT w.balance, w.pending_usage_scaled, w.low_state, w.created_at, e.seq,
    (SELECT low_balance_thresholds FROM customers WHERE customer_id = %(customer_id)s)
FROM w, e
"""
_KEY_CHECK = """
      AND NOT EXISTS (SELECT 1 FROM ledger_entries WHERE customer_id = %(customer_id)s
                      AND key_scope = %(key_scope)s AND idempotency_key = %(idempotency_key)s)"""
# post_alone's extra condition: the entry leaves the wallet's low-balance state right (what
# lowbalance.may_disagree judges in Python before a commit), judged with the configured
# threshold, so only for customers without overrides of their own.
_ALONE_CHECK = """
      AND (SELECT coalesce(json_typeof(low_balance_thresholds), 'null') FROM customers
           WHERE customer_id = %(customer_id)s) = 'null'
      AND (%(threshold)s::bigint IS NULL OR low_state =
           CASE WHEN balance + %(delta)s < %(threshold)s::bigint THEN 'low' ELSE 'normal' END)"""


def _single(keyed: bool, alone: bool) -> str:
    return _SINGLE.format(
        max_amount=MAX_AMOUNT,
        key_check=_KEY_CHECK if keyed else "",
        alone=_ALONE_CHECK if alone else "",
        columns=", ".join(ENTRY_COLUMNS),
        values=", ".join(_COMPUTED.get(c, f"%({c})s{_CASTS.get(c, '')}") for c in ENTRY_COLUMNS),
    )


SINGLE = {
    (keyed, alone): _single(keyed, alone) for keyed in (True, False) for alone in (True, False)
}


_ARRAY_TYPES = {
    "amount": "bigint",
    "before_balance": "bigint",
    "after_balance": "bigint",
    "is_credit": "boolean",
    "created_at": "timestamptz",
}

_BATCH = """
WITH w AS (
    UPDATE wallets SET balance = wallets.balance + d.delta, updated_at = :now
    FROM unnest(CAST(:w_customer_id AS text[]), CAST(:w_currency AS text[]),
                CAST(:w_delta AS bigint[])) AS d(customer_id, currency, delta)
    WHERE wallets.customer_id = d.customer_id AND wallets.currency = d.currency
      AND wallets.balance + d.delta >= 0 AND wallets.balance + d.delta <= {max_amount}
    RETURNING 1
), e AS (
    INSERT INTO ledger_entries ({columns})
    SELECT {columns}
    FROM unnest({arrays}) WITH ORDINALITY AS v({columns}, ord)
    ORDER BY ord
    RETURNING id, seq
)
SELECT (SELECT count(*) FROM w), (SELECT array_agg(id) FROM e), (SELECT array_agg(seq) FROM e)
"""
# Only constants are formatted in (column names, the cap); every value is a bind parameter.
BATCH = text(
    _BATCH.format(
        max_amount=MAX_AMOUNT,
        columns=", ".join(ENTRY_COLUMNS),
        arrays=", ".join(f"CAST(:{c} AS {_ARRAY_TYPES.get(c, 'text')}[])" for c in ENTRY_COLUMNS),
    )
)
