"""Alembic environment for the project's database, run with a connection handed over by
``worker.deadletter.store.engine``."""

from __future__ import annotations

from alembic import context

from worker.deadletter.store.tables import VERSION_TABLE, metadata

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run these migrations through worker.deadletter.store.engine.upgrade()")
context.configure(connection=connection, target_metadata=metadata, version_table=VERSION_TABLE)
with context.begin_transaction():
    context.run_migrations()
