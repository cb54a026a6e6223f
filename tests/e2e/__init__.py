"""Whole-stack tests: the web server (granian), Celery and beat as real processes on a private
redis-server."""
