"""Celery tasks (maintenance)."""

from worker.infra.celery_app import app  # noqa: F401
