"""Celery tasks (maintenance)."""

from worker.celery import app  # noqa: F401
