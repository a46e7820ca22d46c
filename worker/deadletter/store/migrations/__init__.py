"""Alembic migrations of the project's database (run whenever it is opened)."""
