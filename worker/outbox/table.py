"""The ``order_sync_outbox`` table, as SQLAlchemy sees it (the migrations create it)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

TABLE_NAME = "order_sync_outbox"
#: Alembic's own bookkeeping table. Not ``alembic_version``: the outbox usually lives in the
#: upstream's database, whose own Alembic history must not be touched.
VERSION_TABLE = "order_sync_outbox_version"

metadata = MetaData()


class UtcDateTime(TypeDecorator[dt.datetime]):
    """``timestamp with time zone`` that SQLite gets right too.

    SQLite has no zones: it would store 11:00+01:00 as 11:00. Times are turned into UTC on the
    way in (naive ones are taken as UTC) and come back zoned, on every database.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is not None and not isinstance(value, dt.datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        return None if value is None else as_utc(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        return as_utc(value) if isinstance(value, dt.datetime) else None


def as_utc(value: dt.datetime) -> dt.datetime:
    """Zoned times converted to UTC; zoneless ones taken as UTC already."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


# SQLite only auto-increments a plain INTEGER PRIMARY KEY (its rowid); BIGINT elsewhere.
_ID = BigInteger().with_variant(Integer, "sqlite")
_PENDING = text("published_at IS NULL")

outbox = Table(
    TABLE_NAME,
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("event_id", Text, nullable=False),
    Column("order_id", Integer, nullable=False),
    Column("occurred_at", UtcDateTime, nullable=False),
    Column("changes", JSON().with_variant(JSONB, "postgresql")),
    Column("created_at", UtcDateTime, nullable=False, server_default=func.now()),
    Column("published_at", UtcDateTime),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("last_error", Text),
    UniqueConstraint("event_id", name="order_sync_outbox_event_id_key"),
    # What the poller reads: only the pending rows, in id order, stay small however big the
    # table grows.
    Index("ix_order_sync_outbox_pending", "id", postgresql_where=_PENDING, sqlite_where=_PENDING),
    # Retention cleanup and "last pass" look rows up by publication time.
    Index("ix_order_sync_outbox_published_at", "published_at"),
)
