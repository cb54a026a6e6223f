"""Provider webhook receivers (``/webhooks/{provider}``), authenticated by the provider's
signature, not by an API key: ``receiver`` holds the shared verify-store-enqueue flow, one
module per provider holds its signature scheme."""

from __future__ import annotations

# Importing a provider's module adds its route to the blueprint; the order is the order of
# the routes in /openapi.json.
from webhooks.providers import dodo, stripe  # noqa: F401
from webhooks.providers.receiver import bp

__all__ = ["bp"]
