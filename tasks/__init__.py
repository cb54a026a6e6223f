"""Celery tasks: thin wrappers that open one transaction and call one ``worker`` function."""
