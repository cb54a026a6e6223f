"""Reports over the ledger: analytics buckets, balance at a time, statements, exports and the
business-wide summary. Read-only: nothing here writes, and every figure comes from stored
entries (``amount``, ``after_balance``) or stored usage costs, never from a replay.

- ``periods``: time zones, ``from``/``to`` and the calendar buckets between them;
- ``balances``: a wallet's balance at a moment, and where a period starts and ends in the
  ledger's order;
- ``analytics``: credits, debits and counts per bucket and group, usage cost per meter;
- ``statements``: opening, closing, totals and the entries of a period;
- ``export``: every entry of a period as CSV or NDJSON, streamed;
- ``summary``: the business-wide figures per currency;
- ``schemas``: the JSON shapes, shared by the HTTP API and the CLI.

**The ledger's order.** A period's entries are those between two points of the wallet's
chain: after the last entry created before ``from`` and up to the last entry created before
``to`` (by ``seq``, the order the wallet's lock gave them). Entries of one wallet are written
under its lock, so ``seq`` follows the chain; ``created_at`` is taken just before the lock is
waited for and can run a few milliseconds out of order between two concurrent postings. Taking
the period by the chain is what makes ``opening + credits - debits = closing`` exact always;
analytics buckets, which only add amounts up, go by ``created_at``.
"""
