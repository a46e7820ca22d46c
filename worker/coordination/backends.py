"""Which shared store a process opens: Redis for a fleet, SQLite for one machine."""

from __future__ import annotations

from worker.coordination.redis_store import RedisStore
from worker.coordination.sqlite_store import SqliteStore
from worker.coordination.store import Store


def open_store(redis_url: str | None, sqlite_path: str) -> Store:
    """Redis when a URL is given, else the embedded SQLite store at ``sqlite_path``."""
    if redis_url:
        return RedisStore(redis_url)
    return SqliteStore(sqlite_path)
