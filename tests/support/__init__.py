"""Helpers shared by the tests: real processes, webhook payloads, usage accounting."""
