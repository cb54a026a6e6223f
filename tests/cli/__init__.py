"""The operator CLI (worker/cli/)."""
