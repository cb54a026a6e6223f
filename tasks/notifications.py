"""Celery tasks (notifications)."""

from worker.celery import app  # noqa: F401
