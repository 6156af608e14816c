"""Alembic migrations of the cloud store; `cloud.db.migrate` runs them at start."""
