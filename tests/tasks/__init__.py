"""The Celery task layer (tasks/)."""
