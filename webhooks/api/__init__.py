"""The HTTP API behind an API key, one module per area: ``customers``, ``wallets`` (and their
ledger entries; both Dodo compatible), ``charges`` (wallet charges and refunds), ``usage``
(usage events), ``admin`` (operator tasks, the audit log); and ``health``, the one route here
without a key. Every API-key route declares its scope with ``webhooks.scopes.requires``.

Request shapes shared by several modules are in ``schemas``; the checks every API-key route
makes in ``guards``; response shapes in ``worker.ledger.schemas`` (shared with the CLI); error
responses in ``webhooks.errors``.
"""
