"""Alembic migrations of the outbox table (run by ``order-sync outbox init``)."""
