"""Alembic environment for the outbox: online with a connection handed over by ``worker.outbox.db``,
offline (``--sql``) from the URL, so DBAs can get the DDL without running anything.
"""

from __future__ import annotations

from alembic import context

from worker.outbox.table import VERSION_TABLE, metadata

config = context.config
connection = config.attributes.get("connection")

if context.is_offline_mode():
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()
elif connection is not None:
    context.configure(connection=connection, target_metadata=metadata, version_table=VERSION_TABLE)
    with context.begin_transaction():
        context.run_migrations()
else:
    raise RuntimeError("run the outbox migrations through worker.outbox.db.migrate()")
