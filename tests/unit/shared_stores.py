"""Real shared stores for the property tests: Redis db 12 (flushed per example) and SQLite
files in a temporary folder; and a clock that stands still until a test moves it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import redis

from worker.coordination import sqlite_store
from worker.coordination.redis_store import RedisStore
from worker.coordination.sqlite_store import SqliteStore
from worker.coordination.store import Store

REDIS_URL = "redis://127.0.0.1:6379/12"
BACKENDS = ("redis", "sqlite")
# SQLite files in memory when the machine has a tmpfs: the same transactions, without waiting
# for a disk to sync each commit (what these tests check is not durability).
MEMORY = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


class Stores(list[Store]):
    """Store objects on one store; ``open()`` adds another (in a forked child, say)."""

    def __init__(self, opener: Callable[[], Store]) -> None:
        super().__init__()
        self._opener = opener

    def open(self) -> Store:
        store = self._opener()
        self.append(store)
        return store


@contextmanager
def fresh_stores(backend: str, count: int = 1) -> Iterator[Stores]:
    """``count`` store objects on one empty store, as ``count`` processes of a fleet open it."""
    with tempfile.TemporaryDirectory(prefix="order-sync-test-", dir=MEMORY) as folder:
        if backend == "redis":
            redis.Redis.from_url(REDIS_URL).flushdb()
            stores = Stores(lambda: RedisStore(REDIS_URL))
        else:
            path = str(Path(folder) / "state.sqlite3")
            stores = Stores(lambda: SqliteStore(path))
        try:
            for _ in range(count):
                stores.open()
            yield stores
        finally:
            for store in stores:
                store.close()


class FrozenClock:
    """``time()`` for a module that reads ``time.time()``; moves only when told to."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@contextmanager
def sqlite_clock(clock: FrozenClock) -> Iterator[FrozenClock]:
    """The SQLite store reads ``clock`` instead of the system's time (its only use of time)."""
    with mock.patch.object(sqlite_store, "time", SimpleNamespace(time=clock.time)):
        yield clock
