"""Usage billing and settlement (worker/usage/)."""
