"""Kept so ``celery -A worker worker|beat`` finds the app: it lives in worker.infra.celery_app."""

from worker.infra.celery_app import app as app
