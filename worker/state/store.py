"""The few atomic operations the fleet coordinates with, and how to open a store.

Keys and hash fields are strings, values are strings (JSON where structured). Every operation
is atomic on its own; anything bigger is built from a lock (``claim``/``release``).
``StoreUnavailable`` means the store could not be reached: callers retry later and never act
without it, so an outage delays events but never reorders or loses them.
"""

from __future__ import annotations

from typing import Protocol


class StoreUnavailable(Exception):
    """The shared store did not answer; the operation did not happen."""


class Store(Protocol):
    def claim(self, key: str, value: str, ttl: float) -> bool:
        """Set ``key`` to ``value`` for ``ttl`` seconds unless it exists; True if set."""

    def release(self, key: str, value: str) -> bool:
        """Delete ``key`` if it still holds ``value`` (a lock we own); True if deleted."""

    def extend(self, key: str, value: str, ttl: float) -> bool:
        """Give a lock we still own ``ttl`` more seconds; False if it is no longer ours."""

    def get(self, key: str) -> str | None: ...

    def put(self, key: str, value: str, ttl: float | None = None) -> None: ...

    def hash_put(self, key: str, fields: dict[str, str], ttl: float) -> None:
        """Set fields of a hash and (re)set the whole hash's lifetime."""

    def hash_get_all(self, key: str) -> dict[str, str]: ...

    def hash_take_all(self, key: str) -> dict[str, str]:
        """Return every field of a hash and delete it, in one step."""

    def reserve_slot(self, key: str, interval: float) -> float:
        """Reserve the next send slot spaced ``interval`` seconds apart; seconds to wait for it."""

    def close(self) -> None: ...


def open_store(redis_url: str | None, sqlite_path: str) -> Store:
    """Redis when a URL is given, else the embedded SQLite store at ``sqlite_path``."""
    if redis_url:
        from worker.state.redis_store import RedisStore

        return RedisStore(redis_url)
    from worker.state.sqlite_store import SqliteStore

    return SqliteStore(sqlite_path)
