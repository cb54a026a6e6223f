"""Celery tasks (usage)."""

from worker.celery import app  # noqa: F401
