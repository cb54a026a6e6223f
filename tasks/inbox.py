"""Celery tasks (inbox)."""

from worker.celery import app  # noqa: F401
