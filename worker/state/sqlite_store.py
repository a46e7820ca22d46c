"""The embedded shared store: one SQLite file, shared by every worker process on one machine.

Each operation is one ``BEGIN IMMEDIATE`` transaction, so processes take turns; expired keys
are ignored on read and swept now and then.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from worker.state.store import StoreUnavailable

T = TypeVar("T")
SWEEP_EVERY = 500  # operations between sweeps of expired rows

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires REAL);
CREATE TABLE IF NOT EXISTS hash (
    key TEXT NOT NULL, field TEXT NOT NULL, value TEXT NOT NULL, expires REAL NOT NULL,
    PRIMARY KEY (key, field)
);
"""


class SqliteStore:
    def __init__(self, path: str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._local = threading.local()
        self._operations = 0
        try:
            self._db().executescript(_SCHEMA)  # its own transaction: executescript commits
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite store {path}: {exc}") from exc

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            # One connection per thread; autocommit mode so transactions are ours to open.
            db = sqlite3.connect(self._path, timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            self._local.db = db
        return db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._db()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite store {self._path}: {exc}") from exc
        self._operations += 1
        if self._operations % SWEEP_EVERY == 0:
            self._sweep()

    def _sweep(self) -> None:
        now = time.time()
        with self._transaction() as db:
            db.execute("DELETE FROM kv WHERE expires IS NOT NULL AND expires < ?", (now,))
            db.execute("DELETE FROM hash WHERE expires < ?", (now,))

    def _run(self, operation: Callable[[sqlite3.Connection, float], T]) -> T:
        with self._transaction() as db:
            return operation(db, time.time())

    @staticmethod
    def _live(db: sqlite3.Connection, key: str, now: float) -> str | None:
        row = db.execute(
            "SELECT value FROM kv WHERE key = ? AND (expires IS NULL OR expires >= ?)", (key, now)
        ).fetchone()
        return None if row is None else str(row[0])

    def claim(self, key: str, value: str, ttl: float) -> bool:
        def claim(db: sqlite3.Connection, now: float) -> bool:
            if self._live(db, key, now) is not None:
                return False
            db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?, ?)", (key, value, now + ttl))
            return True

        return self._run(claim)

    def release(self, key: str, value: str) -> bool:
        def release(db: sqlite3.Connection, now: float) -> bool:
            return (
                db.execute("DELETE FROM kv WHERE key = ? AND value = ?", (key, value)).rowcount > 0
            )

        return self._run(release)

    def extend(self, key: str, value: str, ttl: float) -> bool:
        def extend(db: sqlite3.Connection, now: float) -> bool:
            updated = db.execute(
                "UPDATE kv SET expires = ? WHERE key = ? AND value = ? AND expires >= ?",
                (now + ttl, key, value, now),
            )
            return updated.rowcount > 0

        return self._run(extend)

    def get(self, key: str) -> str | None:
        return self._run(lambda db, now: self._live(db, key, now))

    def put(self, key: str, value: str, ttl: float | None = None) -> None:
        def put(db: sqlite3.Connection, now: float) -> None:
            expires = now + ttl if ttl else None
            db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?, ?)", (key, value, expires))

        self._run(put)

    def hash_put(self, key: str, fields: dict[str, str], ttl: float) -> None:
        def hash_put(db: sqlite3.Connection, now: float) -> None:
            db.executemany(
                "INSERT OR REPLACE INTO hash VALUES (?, ?, ?, ?)",
                [(key, name, value, now + ttl) for name, value in fields.items()],
            )
            db.execute("UPDATE hash SET expires = ? WHERE key = ?", (now + ttl, key))

        self._run(hash_put)

    def hash_get_all(self, key: str) -> dict[str, str]:
        def get_all(db: sqlite3.Connection, now: float) -> dict[str, str]:
            rows = db.execute(
                "SELECT field, value FROM hash WHERE key = ? AND expires >= ?", (key, now)
            )
            return {str(name): str(value) for name, value in rows}

        return self._run(get_all)

    def hash_take_all(self, key: str) -> dict[str, str]:
        def take_all(db: sqlite3.Connection, now: float) -> dict[str, str]:
            rows = db.execute(
                "SELECT field, value FROM hash WHERE key = ? AND expires >= ?", (key, now)
            ).fetchall()
            db.execute("DELETE FROM hash WHERE key = ?", (key,))
            return {str(name): str(value) for name, value in rows}

        return self._run(take_all)

    def reserve_slot(self, key: str, interval: float) -> float:
        def reserve(db: sqlite3.Connection, now: float) -> float:
            slot = max(float(self._live(db, key, now) or 0.0), now)
            expires = slot + interval + 1
            db.execute(
                "INSERT OR REPLACE INTO kv VALUES (?, ?, ?)", (key, str(slot + interval), expires)
            )
            return slot - now

        return self._run(reserve)

    def close(self) -> None:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None
