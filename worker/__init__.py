"""The billing core: plain Python over SQLAlchemy, with no Flask or Celery import outside
``worker.infra.celery_app``, ``worker.infra.redis_transport``, the ``worker.celery`` shim and
``worker.cli`` (see ``[tool.importlinter]`` in pyproject.toml)."""
