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

from worker.coordination.store import Entry, Lock, StoreUnavailable, Taken

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

    @classmethod
    def _claim(cls, db: sqlite3.Connection, key: str, value: str, now: float, ttl: float) -> bool:
        if cls._live(db, key, now) is not None:
            return False
        db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?, ?)", (key, value, now + ttl))
        return True

    @staticmethod
    def _extend(db: sqlite3.Connection, key: str, value: str, now: float, ttl: float) -> bool:
        updated = db.execute(
            "UPDATE kv SET expires = ? WHERE key = ? AND value = ? AND expires >= ?",
            (now + ttl, key, value, now),
        )
        return updated.rowcount > 0

    @staticmethod
    def _hash_put(
        db: sqlite3.Connection, key: str, fields: dict[str, str], now: float, ttl: float
    ) -> None:
        db.executemany(
            "INSERT OR REPLACE INTO hash VALUES (?, ?, ?, ?)",
            [(key, name, value, now + ttl) for name, value in fields.items()],
        )
        db.execute("UPDATE hash SET expires = ? WHERE key = ?", (now + ttl, key))

    @staticmethod
    def _hash_get_all(db: sqlite3.Connection, key: str, now: float) -> dict[str, str]:
        rows = db.execute(
            "SELECT field, value FROM hash WHERE key = ? AND expires >= ?", (key, now)
        ).fetchall()
        return {str(name): str(value) for name, value in rows}

    @classmethod
    def _hash_take_all(cls, db: sqlite3.Connection, key: str, now: float) -> dict[str, str]:
        fields = cls._hash_get_all(db, key, now)
        db.execute("DELETE FROM hash WHERE key = ?", (key,))
        return fields

    def claim(self, key: str, value: str, ttl: float) -> bool:
        return self._run(lambda db, now: self._claim(db, key, value, now, ttl))

    def release(self, key: str, value: str) -> bool:
        def release(db: sqlite3.Connection, now: float) -> bool:
            return (
                db.execute("DELETE FROM kv WHERE key = ? AND value = ?", (key, value)).rowcount > 0
            )

        return self._run(release)

    def get(self, key: str) -> str | None:
        return self._run(lambda db, now: self._live(db, key, now))

    def put(self, key: str, value: str, ttl: float | None = None) -> None:
        def put(db: sqlite3.Connection, now: float) -> None:
            expires = now + ttl if ttl else None
            db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?, ?)", (key, value, expires))

        self._run(put)

    def delete(self, *keys: str) -> None:
        def delete(db: sqlite3.Connection, now: float) -> None:
            for key in keys:
                db.execute("DELETE FROM kv WHERE key = ?", (key,))
                db.execute("DELETE FROM hash WHERE key = ?", (key,))

        self._run(delete)

    def members(self, key: str) -> list[str]:
        return list(self._run(lambda db, now: self._hash_get_all(db, key, now)))

    def hash_put(self, key: str, fields: dict[str, str], ttl: float) -> None:
        self._run(lambda db, now: self._hash_put(db, key, fields, now, ttl))

    def add_unless_done(self, entry: Entry, *, even_if_done: bool = False) -> str | None:
        return self._run(lambda db, now: self._add(db, now, entry, even_if_done)[0])

    def add_and_claim(
        self,
        entry: Entry,
        lock: Lock,
        done_prefix: str,
        versions_key: str,
        *,
        even_if_done: bool = False,
    ) -> tuple[str | None, Taken | None]:
        def add_and_claim(db: sqlite3.Connection, now: float) -> tuple[str | None, Taken | None]:
            done, added = self._add(db, now, entry, even_if_done)
            if not added or not self._claim(db, lock.key, lock.owner, now, lock.ttl):
                return done, None
            return done, self._take(db, now, entry.hash_key, done_prefix, versions_key)

        return self._run(add_and_claim)

    def take_all_if_locked(
        self, lock: Lock, hash_key: str, done_prefix: str, versions_key: str
    ) -> Taken | None:
        def take(db: sqlite3.Connection, now: float) -> Taken | None:
            if not self._extend(db, lock.key, lock.owner, now, lock.ttl):
                return None
            return self._take(db, now, hash_key, done_prefix, versions_key)

        return self._run(take)

    def _add(
        self, db: sqlite3.Connection, now: float, entry: Entry, even_if_done: bool
    ) -> tuple[str | None, bool]:
        """(``done_key``'s value, whether the field was added)."""
        done = self._live(db, entry.done_key, now)
        if done is not None and not even_if_done:
            return done, False
        self._hash_put(db, entry.hash_key, {entry.field: entry.value}, now, entry.ttl)
        return done, True

    def _take(
        self, db: sqlite3.Connection, now: float, hash_key: str, done_prefix: str, versions_key: str
    ) -> Taken:
        fields = self._hash_take_all(db, hash_key, now)
        done = {name: self._live(db, done_prefix + name, now) for name in fields}
        return Taken(
            fields=fields,
            done={name: value for name, value in done.items() if value is not None},
            versions=self._hash_get_all(db, versions_key, now),
        )

    def settle(
        self,
        done: dict[str, str],
        ttl: float,
        versions_key: str,
        versions: dict[str, str],
        hash_key: str,
        lock: Lock,
        clear: str | None = None,
    ) -> bool:
        def settle(db: sqlite3.Connection, now: float) -> bool:
            db.executemany(
                "INSERT OR REPLACE INTO kv VALUES (?, ?, ?)",
                [(key, value, now + ttl) for key, value in done.items()],
            )
            if versions:
                self._hash_put(db, versions_key, versions, now, ttl)
            if clear:
                db.execute("DELETE FROM hash WHERE key = ?", (clear,))
            if self._live(db, lock.key, now) != lock.owner:
                return True
            if self._hash_get_all(db, hash_key, now):
                return False
            db.execute("DELETE FROM kv WHERE key = ?", (lock.key,))
            return True

        return self._run(settle)

    def take_slot(
        self,
        pause_key: str,
        slot_key: str,
        interval: float | None,
        longest_wait: float,
        gate_key: str | None = None,
    ) -> tuple[str, float]:
        def take(db: sqlite3.Connection, now: float) -> tuple[str, float]:
            if gate_key and self._live(db, gate_key, now) is not None:
                return "gated", 0.0
            paused = self._live(db, pause_key, now)
            if paused is not None and float(paused) > now:
                return "paused", float(paused)
            if interval is None:
                return "free", 0.0
            slot = max(float(self._live(db, slot_key, now) or 0.0), now)
            if slot - now > longest_wait:
                return "full", slot - now
            db.execute(
                "INSERT OR REPLACE INTO kv VALUES (?, ?, ?)",
                (slot_key, str(slot + interval), slot + interval + 1),
            )
            return "reserved", slot - now

        return self._run(take)

    def note_failure(
        self,
        streak_key: str,
        member: str,
        threshold: int,
        window: float,
        gate_key: str,
        gate_value: str,
    ) -> bool:
        # The set is a hash whose fields are its members.
        def note(db: sqlite3.Connection, now: float) -> bool:
            self._hash_put(db, streak_key, {member: ""}, now, window)
            if len(self._hash_get_all(db, streak_key, now)) < threshold:
                return False
            if self._live(db, gate_key, now) is not None:
                return False
            db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?, NULL)", (gate_key, gate_value))
            return True

        return self._run(note)

    def close(self) -> None:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None
