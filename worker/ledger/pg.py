"""PostgreSQL's statements for posting, all built from the one column list.

- ``SINGLE[(keyed, alone)]``: one credit as ONE statement: the conditional UPDATE of the
  wallet and the INSERTs of its entry and its lot in one CTE, so the row lock is held for one
  statement (and its commit). Under READ COMMITTED a concurrent writer waits on the row lock,
  then re-checks the WHERE against the committed row. When it matches no row (wallet missing,
  balance cap, the key used, or for ``alone`` a low-balance crossing) nothing is written and
  the transactional path works out which it was. NOT EXISTS only saves a round trip for fresh
  keys; the unique index still decides a race.
- ``DEBIT[(keyed, alone)]``: one debit, after ``LOCK_ONE`` locked its wallet in an earlier
  statement (which lots it spends must be read after the lock; one statement's snapshot is
  taken before its row locks wait). The lots are taken by a running sum in spending order.
- ``BATCH``: the transactional path's write for wallets it has locked and legs it has already
  judged: every wallet's change, entry, new lot, spent lot and consumption in one statement,
  the rows travelling as one JSON document per kind (constant statement text, cached by
  PostgreSQL and SQLAlchemy, where a VALUES list or an executemany would be compiled or sent
  row by row).

The CHECK constraints and the lots' trigger stand behind all three.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import text

from worker.money import MAX_AMOUNT

# The columns of a ledger entry, in the one order every INSERT uses (the keys of
# ``legs.entry_row``).
ENTRY_COLUMNS = (
    "id",
    "business_id",
    "customer_id",
    "currency",
    "amount",
    "is_credit",
    "before_balance",
    "after_balance",
    "event_type",
    "reason",
    "reference_object_id",
    "idempotency_key",
    "key_scope",
    "fingerprint",
    "created_at",
    "actor",
)

# The columns of a credit lot, in the one order every INSERT uses (``lots.lot_row``).
LOT_COLUMNS = (
    "id",
    "customer_id",
    "currency",
    "entry_id",
    "amount",
    "remaining",
    "expired",
    "category",
    "expires_at",
    "created_at",
)

# Nullable text parameters need a type for PostgreSQL when they arrive as NULL.
_CASTS = {"reason": "::text", "reference_object_id": "::text", "idempotency_key": "::text"}
_COMPUTED = {"before_balance": "w.balance - %(delta)s", "after_balance": "w.balance"}

# One credit: the wallet, its entry and the entry's lot. Debits never take this path: they
# read the wallet's lots after locking it, which one statement's single snapshot cannot do.
_SINGLE = """
WITH w AS (
    UPDATE wallets SET balance = balance + %(delta)s, updated_at = %(created_at)s{rearm}
    WHERE customer_id = %(customer_id)s AND currency = %(currency)s
      AND %(delta)s > 0 AND balance + %(delta)s <= {max_amount}{key_check}{alone}
    RETURNING balance, pending_usage_scaled, low_state, created_at, held, depleted
), e AS (
    INSERT INTO ledger_entries ({columns})
    SELECT {values}
    FROM w
    RETURNING seq
), l AS (
    INSERT INTO credit_lots ({lot_columns})
    SELECT %(lot_id)s, %(customer_id)s, %(currency)s, %(id)s, %(amount)s, %(amount)s, 0,
           %(category)s, %(expires_at)s::timestamptz, %(created_at)s
    FROM e
)
SELECT w.balance, w.pending_usage_scaled, w.low_state, w.created_at, e.seq,
    (SELECT low_balance_thresholds FROM customers WHERE customer_id = %(customer_id)s),
    w.held, w.depleted
FROM w, e
"""
# One debit that refuses a shortfall, for a wallet this transaction has already locked
# (``LOCK_ONE``, an earlier statement: this one's snapshot is taken after the lock, so it sees
# every lot committed before, and nothing else can change them until we commit). Its lots
# are taken in spending order (``lots.spending_order``) by a running sum, and it writes only
# when the live lots hold the whole amount: wallet, entry, lots and consumptions at once.
# Held money is not spendable: the live lots less the wallet's holds (``held``, stable under
# the lock) must cover the debit; ``held = 0``, the usual case, skips that second sum.
_DEBIT = """
WITH l AS (
    SELECT id, remaining,
           sum(remaining) OVER (ORDER BY expires_at IS NULL, expires_at, category DESC, seq
                                ROWS UNBOUNDED PRECEDING) AS running
    FROM credit_lots
    WHERE customer_id = %(customer_id)s AND currency = %(currency)s AND remaining > 0
      AND (expires_at IS NULL OR expires_at > %(created_at)s)
), t AS (
    SELECT id, least(remaining, %(amount)s - (running - remaining)) AS take
    FROM l WHERE running - remaining < %(amount)s
), w AS (
    UPDATE wallets SET balance = balance + %(delta)s, updated_at = %(created_at)s{rearm}
    WHERE customer_id = %(customer_id)s AND currency = %(currency)s
      AND %(delta)s < 0 AND balance - held + %(delta)s >= 0
      AND (SELECT coalesce(sum(take), 0) FROM t) = %(amount)s
      AND (held = 0 OR (SELECT max(running) FROM l) - held >= %(amount)s){key_check}{alone}
    RETURNING balance, pending_usage_scaled, low_state, created_at, held, depleted
), e AS (
    INSERT INTO ledger_entries ({columns})
    SELECT {values}
    FROM w
    RETURNING seq
), u AS (
    UPDATE credit_lots SET remaining = credit_lots.remaining - t.take
    FROM t, w WHERE credit_lots.id = t.id
), c AS (
    INSERT INTO lot_consumptions (entry_id, lot_id, amount)
    SELECT %(id)s, t.id, t.take FROM t, w
)
SELECT w.balance, w.pending_usage_scaled, w.low_state, w.created_at, e.seq,
    (SELECT low_balance_thresholds FROM customers WHERE customer_id = %(customer_id)s),
    w.held, w.depleted
FROM w, e
"""
LOCK_ONE = """
SELECT 1 FROM wallets WHERE customer_id = %(customer_id)s AND currency = %(currency)s FOR UPDATE
"""

_KEY_CHECK = """
      AND NOT EXISTS (SELECT 1 FROM ledger_entries WHERE customer_id = %(customer_id)s
                      AND key_scope = %(key_scope)s AND idempotency_key = %(idempotency_key)s)"""
# post_alone's extra condition: the entry leaves the wallet's low-balance and depleted states
# right (what lowbalance.may_disagree judges in Python before a commit) for its available
# balance, judged with the configured threshold, so only for customers without overrides of
# their own.
_ALONE_CHECK = """
      AND (SELECT coalesce(json_typeof(low_balance_thresholds), 'null') FROM customers
           WHERE customer_id = %(customer_id)s) = 'null'
      AND (%(threshold)s::bigint IS NULL OR low_state =
           CASE WHEN balance - held + %(delta)s < %(threshold)s::bigint THEN 'low'
                ELSE 'normal' END)
      AND (depleted OR balance - held + %(delta)s > 0)"""
# ... and it moves ``depleted`` itself when the move is silent (rising above 0); reaching 0
# announces ``wallet.depleted``, which only the transaction does (the condition above).
_REARM = """,
        depleted = depleted AND balance - held + %(delta)s <= 0"""


def _single(keyed: bool, alone: bool) -> str:
    return _SINGLE.format(
        max_amount=MAX_AMOUNT,
        key_check=_KEY_CHECK if keyed else "",
        alone=_ALONE_CHECK if alone else "",
        rearm=_REARM if alone else "",
        columns=", ".join(ENTRY_COLUMNS),
        values=", ".join(_COMPUTED.get(c, f"%({c})s{_CASTS.get(c, '')}") for c in ENTRY_COLUMNS),
        lot_columns=", ".join(LOT_COLUMNS),
    )


def _debit(keyed: bool, alone: bool) -> str:
    return _DEBIT.format(
        key_check=_KEY_CHECK if keyed else "",
        alone=_ALONE_CHECK if alone else "",
        rearm=_REARM if alone else "",
        columns=", ".join(ENTRY_COLUMNS),
        values=", ".join(_COMPUTED.get(c, f"%({c})s{_CASTS.get(c, '')}") for c in ENTRY_COLUMNS),
    )


SINGLE = {
    (keyed, alone): _single(keyed, alone) for keyed in (True, False) for alone in (True, False)
}
DEBIT = {(keyed, alone): _debit(keyed, alone) for keyed in (True, False) for alone in (True, False)}


_TYPES = {
    "amount": "bigint",
    "before_balance": "bigint",
    "after_balance": "bigint",
    "is_credit": "boolean",
    "created_at": "timestamptz",
}

# A batch's rows travel as ONE JSON document (``rows_json``): psycopg dumps a list as an
# array element by element in Python (about 3 µs each: ~10 ms for a thousand-leg batch's
# columns), where the C JSON encoder takes microseconds. Constant statement text either way.
_BATCH = """
WITH w AS (
    UPDATE wallets SET balance = wallets.balance + d.delta, updated_at = CAST(:now AS timestamptz)
    FROM json_to_recordset(CAST(:wallets AS json)) AS d(customer_id text, currency text,
                                                        delta bigint)
    WHERE wallets.customer_id = d.customer_id AND wallets.currency = d.currency
      AND wallets.balance + d.delta >= 0 AND wallets.balance + d.delta <= {max_amount}
    RETURNING 1
), e AS (
    INSERT INTO ledger_entries ({columns})
    SELECT {columns}
    FROM json_to_recordset(CAST(:entries AS json)) AS v({typed}, ord int)
    ORDER BY ord
    RETURNING id, seq
), nl AS (
    INSERT INTO credit_lots ({lot_columns})
    SELECT {lot_columns}
    FROM json_to_recordset(CAST(:new_lots AS json)) AS v({lot_typed}, ord int)
    ORDER BY ord
), sl AS (
    -- Lots stored before this posting; its own new lots went in above, already spent.
    UPDATE credit_lots SET remaining = credit_lots.remaining - d.taken,
                           expired = credit_lots.expired + d.expired
    FROM json_to_recordset(CAST(:spent_lots AS json)) AS d(id text, taken bigint, expired bigint)
    WHERE credit_lots.id = d.id AND credit_lots.remaining >= d.taken
    RETURNING 1
), c AS (
    INSERT INTO lot_consumptions (entry_id, lot_id, amount)
    SELECT entry_id, lot_id, amount
    FROM json_to_recordset(CAST(:consumptions AS json)) AS v(entry_id text, lot_id text,
                                                             amount bigint)
)
SELECT (SELECT count(*) FROM w), (SELECT json_agg(json_build_array(id, seq)) FROM e),
       (SELECT count(*) FROM sl)
"""
_LOT_TYPES = {
    "amount": "bigint",
    "remaining": "bigint",
    "expired": "bigint",
    "expires_at": "timestamptz",
    "created_at": "timestamptz",
}
# Only constants are formatted in (column names and types, the cap); values are bound.
BATCH = text(
    _BATCH.format(
        max_amount=MAX_AMOUNT,
        columns=", ".join(ENTRY_COLUMNS),
        typed=", ".join(f"{c} {_TYPES.get(c, 'text')}" for c in ENTRY_COLUMNS),
        lot_columns=", ".join(LOT_COLUMNS),
        lot_typed=", ".join(f"{c} {_LOT_TYPES.get(c, 'text')}" for c in LOT_COLUMNS),
    )
)

# The keys and wallets a batch looks up travel as JSON too; each key is one unique-index
# lookup (the LATERAL, kept apart by LIMIT 1, cannot be flattened into a hash join that would
# scan the ledger).
USED_KEYS = text("""
SELECT l.* FROM json_to_recordset(CAST(:keys AS json))
     AS k(customer_id text, key_scope text, idempotency_key text)
CROSS JOIN LATERAL (
    SELECT * FROM ledger_entries e
    WHERE e.customer_id = k.customer_id AND e.key_scope = k.key_scope
      AND e.idempotency_key = k.idempotency_key
    LIMIT 1  -- the keys are unique
) l
""")

# In (customer, currency) order, the one lock order of every posting: the rows are sorted
# before they are locked, so two batches sharing wallets queue instead of deadlocking.
LOCK_WALLETS = text("""
SELECT w.customer_id, w.currency, w.balance, w.pending_usage_scaled, w.low_state,
       w.created_at, c.low_balance_thresholds, w.held, w.depleted
FROM wallets w
JOIN customers c ON c.customer_id = w.customer_id
WHERE (w.customer_id, w.currency) IN (
    SELECT customer_id, currency
    FROM json_to_recordset(CAST(:wallets AS json)) AS k(customer_id text, currency text))
ORDER BY w.customer_id, w.currency
FOR UPDATE OF w
""")


# The lots a posting may spend: per locked wallet, its first live lots in spending order
# (``lots.spending_order``; the index ``ix_credit_lots_spending`` has the same order, so each
# wallet costs a few index entries however many lots it has), and the lots the legs name (a
# reversal's own lot, an expiration's lot), live or not.
SPENDABLE_LOTS = text("""
SELECT l.customer_id, l.currency, l.id, l.seq, l.remaining, l.category, l.expires_at,
       l.created_at
FROM json_to_recordset(CAST(:wallets AS json)) AS k(customer_id text, currency text)
CROSS JOIN LATERAL (
    SELECT * FROM credit_lots l
    WHERE l.customer_id = k.customer_id AND l.currency = k.currency AND l.remaining > 0
      AND (l.expires_at IS NULL OR l.expires_at > CAST(:now AS timestamptz))
    ORDER BY l.expires_at IS NULL, l.expires_at, l.category DESC, l.seq
    LIMIT CAST(:limit AS bigint)
) l
UNION
SELECT l.customer_id, l.currency, l.id, l.seq, l.remaining, l.category, l.expires_at,
       l.created_at
FROM credit_lots l
WHERE l.id IN (SELECT json_array_elements_text(CAST(:named AS json))) AND l.remaining > 0
""")


def rows_json(rows: list[dict[str, Any]]) -> str:
    """``rows`` as the JSON document the statements above read (timestamps in ISO 8601)."""
    return json.dumps(rows, default=_iso, separators=(",", ":"))


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
