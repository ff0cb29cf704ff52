"""Alembic migrations of the server's store, run programmatically at start (see ``store.migrate``)."""
