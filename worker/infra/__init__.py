"""Infrastructure: database engines and sessions, the Celery app and its Redis transport,
gunicorn and GC settings, logging, metrics and migrations."""
