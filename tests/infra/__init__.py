"""Infrastructure (worker/infra/): database, broker, migrations, import contracts."""
