"""Access to the API: API keys, their scopes and authentication."""
