"""Engines for the project's own database, and its schema (Alembic, configured in code).

PostgreSQL in production; by default a SQLite file in the data directory. On SQLite every
transaction that writes takes the write lock when it begins (``BEGIN IMMEDIATE``), so two
replays or an ingester and a purge serialise instead of failing on an upgrade to a write lock;
readers (``readonly`` engines) begin as usual and never wait for a writer (WAL).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import (
    Connection,
    Engine,
    column,
    create_engine,
    event,
    inspect,
    select,
    table,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from worker.deadletter.store.tables import VERSION_TABLE
from worker.settings import ConfigError

MIGRATIONS = Path(__file__).with_name("migrations")
HEAD = "0001"
#: How long a SQLite writer waits for another one (a replay holds the lock while it publishes).
SQLITE_BUSY_SECONDS = 60.0
#: A PostgreSQL server that does not answer fails a command quickly instead of hanging a worker.
CONNECT_TIMEOUT_SECONDS = 5
# Any fixed number: workers starting together on PostgreSQL migrate one after the other.
_MIGRATION_LOCK = 0x0D5C_DB01
_READONLY = "order_sync_readonly"
# Alembic narrates every step at INFO; the one line worth keeping is ours, below.
for _name in ("alembic.runtime.plugins", "alembic.runtime.migration"):
    logging.getLogger(_name).setLevel(logging.WARNING)
log = structlog.get_logger(__name__)


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def create(url: str) -> Engine:
    """An engine for ``url``; raises ConfigError for an unusable URL."""
    try:
        parsed = make_url(url)
        if parsed.get_backend_name() != "sqlite":
            return create_engine(
                parsed,
                pool_pre_ping=True,
                connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS},
            )
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_SECONDS})
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        raise ConfigError(f"ORDER_SYNC_DATABASE_URL is not usable: {exc}") from None
    _sqlite_locking(engine)
    return engine


def readonly(engine: Engine) -> Engine:
    """The same engine (and pool), for transactions that only read."""
    return engine.execution_options(**{_READONLY: True})


def _sqlite_locking(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _: Any) -> None:
        # Let the "begin" event below issue BEGIN instead of pysqlite's deferred one.
        dbapi_connection.isolation_level = None
        dbapi_connection.execute("PRAGMA journal_mode=WAL")
        # In WAL mode a commit survives a crash of the process without an fsync per commit.
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        readonly_ = connection.get_execution_options().get(_READONLY, False)
        connection.exec_driver_sql("BEGIN" if readonly_ else "BEGIN IMMEDIATE")


def _current_revision(connection: Connection) -> str | None:
    if not inspect(connection).has_table(VERSION_TABLE):
        return None
    version = table(VERSION_TABLE, column("version_num"))
    return connection.execute(select(version.c.version_num)).scalar()


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest revision; cheap (one query) when it is there already."""
    with readonly(engine).connect() as connection:
        if _current_revision(connection) == HEAD:
            return
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        if not is_sqlite(engine):
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    log.debug("database schema up to date", revision=HEAD)


def downgrade(engine: Engine) -> None:
    """Drop every table of the schema: for tests."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "base")
