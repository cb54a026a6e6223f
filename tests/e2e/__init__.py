"""Whole-stack tests: gunicorn, Celery and beat as real processes on a private redis-server."""
