"""Engines for the outbox database, and its migrations (Alembic, configured in code).

SQLite needs two adjustments to behave like a queue table shared by several processes: the write
lock is taken when a transaction begins (``BEGIN IMMEDIATE``), so two pollers serialise instead
of both reading the same pending rows, and a busy database is waited for rather than failing.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from worker.settings import ConfigError, OutboxSettings

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")
#: How long a SQLite writer waits for another one (a pass holds the lock while it publishes).
SQLITE_BUSY_SECONDS = 60.0
# Any fixed number: concurrent ``outbox init`` runs on PostgreSQL queue up behind it.
_MIGRATION_LOCK = 0x0D5C_0B0C
# Alembic announces each plugin it loads, at INFO, whenever it is imported: noise in every log.
logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def outbox_engine(settings: OutboxSettings) -> Engine:
    """An engine for the configured outbox; raises ConfigError for an unusable URL."""
    try:
        url = make_url(settings.url)
        if url.get_backend_name() != "sqlite":
            # Connections idle between passes may have been closed by the server or a proxy.
            return create_engine(url, pool_pre_ping=True)
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_SECONDS})
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        raise ConfigError(f"ORDER_SYNC_OUTBOX_URL is not usable: {exc}") from None
    _serialise_sqlite_writers(engine)
    return engine


def _serialise_sqlite_writers(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN instead of pysqlite's deferred one.
        dbapi_connection.isolation_level = None
        # Readers (``outbox status``, upstream reads) do not wait for a pass that writes.
        dbapi_connection.execute("PRAGMA journal_mode=WAL")

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def alembic_config(output: io.StringIO | None = None) -> Config:
    from alembic.config import Config

    config = Config(output_buffer=output)
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the outbox schema to ``revision``; a no-op when it is there already."""
    from alembic import command

    config = alembic_config()
    with engine.begin() as connection:
        if not is_sqlite(engine):
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    """Undo migrations down to ``revision`` (``base`` drops the table): for tests and rollbacks."""
    from alembic import command

    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def offline_sql(url: str = "postgresql+psycopg://") -> str:
    """The DDL the migrations would run on ``url``'s dialect, as a script for a DBA."""
    from alembic import command

    output = io.StringIO()
    config = alembic_config(output)
    config.set_main_option("sqlalchemy.url", url)
    command.upgrade(config, "head", sql=True)
    return output.getvalue()
