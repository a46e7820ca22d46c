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

from worker.coordination.store import Backlog, Entry, Keys, Lane, StoreUnavailable, Turn

T = TypeVar("T")
SWEEP_EVERY = 500  # operations between sweeps of expired rows

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires REAL);
CREATE TABLE IF NOT EXISTS hash (
    key TEXT NOT NULL, field TEXT NOT NULL, value TEXT NOT NULL, expires REAL NOT NULL,
    PRIMARY KEY (key, field)
);
CREATE TABLE IF NOT EXISTS due (
    key TEXT NOT NULL, member TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY (key, member)
);
CREATE INDEX IF NOT EXISTS due_by_time ON due (key, at);
"""
# A hash field kept until deleted (a pending event) still has an expiry column to fill.
KEPT = 100 * 365 * 86400.0


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

    def absorb(
        self, entry: Entry, lane: Lane, member: str, keys: Keys, *, even_if_done: bool = False
    ) -> str | None:
        def absorb(db: sqlite3.Connection, now: float) -> str | None:
            done = self._live(db, entry.done_key, now)
            if done is not None and not even_if_done:
                return done
            new = self._hash_get(db, entry.hash_key, entry.field, now) is None
            self._hash_put(db, entry.hash_key, {entry.field: entry.value}, now, KEPT)
            if new:
                self._add_to(db, keys.events, 1, now)
            at = now
            if lane.leave:
                # A due time still to come there (a turn's lease, a retry's wait) comes along.
                left = self._due_at(db, lane.leave, member)
                db.execute("DELETE FROM due WHERE key = ? AND member = ?", (lane.leave, member))
                if left is not None:
                    at = max(now, left)
            if lane.unless_in and self._due_at(db, lane.unless_in, member) is not None:
                return done
            db.execute("INSERT OR IGNORE INTO due VALUES (?, ?, ?)", (lane.join, member, at))
            return done

        return self._run(absorb)

    def due(self, queues: list[tuple[str, float]]) -> bool:
        def due(db: sqlite3.Connection, now: float) -> bool:
            return any(
                db.execute(
                    "SELECT 1 FROM due WHERE key = ? AND at <= ? LIMIT 1", (key, now - hold)
                ).fetchone()
                for key, hold in queues
            )

        return self._run(due)

    def next_due(
        self,
        queues: list[tuple[str, float]],
        keys: Keys,
        owner: str,
        lock_ttl: float,
        only: str | None = None,
    ) -> Turn | None:
        def next_due(db: sqlite3.Connection, now: float) -> Turn | None:
            for key, hold in queues:
                if only is not None:
                    found = db.execute(
                        "SELECT member FROM due WHERE key = ? AND member = ?", (key, only)
                    ).fetchall()
                else:
                    found = db.execute(
                        "SELECT member FROM due WHERE key = ? AND at <= ? ORDER BY at LIMIT 16",
                        (key, now - hold),
                    ).fetchall()
                for (member,) in found:
                    turn = self._turn(db, now, key, str(member), keys, owner, lock_ttl)
                    if turn is not None:
                        return turn
            return None

        return self._run(next_due)

    def _turn(
        self,
        db: sqlite3.Connection,
        now: float,
        key: str,
        member: str,
        keys: Keys,
        owner: str,
        lock_ttl: float,
    ) -> Turn | None:
        if not self._claim(db, keys.lock + member, owner, now, lock_ttl):
            return None
        fields = self._hash_get_all(db, keys.pending + member, now)
        if not fields:
            db.execute("DELETE FROM due WHERE key = ? AND member = ?", (key, member))
            db.execute("DELETE FROM kv WHERE key = ?", (keys.lock + member,))
            return None
        db.execute(
            "UPDATE due SET at = ? WHERE key = ? AND member = ?", (now + lock_ttl, key, member)
        )
        done = {name: self._live(db, keys.done + name, now) for name in fields}
        failures = self._hash_get(db, keys.failures, member, now)
        return Turn(
            member=member,
            due_key=key,
            fields=fields,
            done={name: value for name, value in done.items() if value is not None},
            versions=self._hash_get_all(db, keys.versions + member, now),
            failures=int(failures or 0),
        )

    def settle_turn(
        self,
        turn: Turn,
        owner: str,
        keys: Keys,
        settled: dict[str, str],
        ttl: float,
        versions: dict[str, str],
        failures: int,
        due_in: float = 0.0,
        clear: str | None = None,
    ) -> None:
        member, pending = turn.member, keys.pending + turn.member

        def settle(db: sqlite3.Connection, now: float) -> None:
            removed = 0
            for name, outcome in settled.items():
                removed += db.execute(
                    "DELETE FROM hash WHERE key = ? AND field = ?", (pending, name)
                ).rowcount
                db.execute(
                    "INSERT OR REPLACE INTO kv VALUES (?, ?, ?)",
                    (keys.done + name, outcome, now + ttl),
                )
            self._add_to(db, keys.events, -removed, now)
            if versions:
                self._hash_put(db, keys.versions + member, versions, now, ttl)
            if failures > 0:
                self._hash_put(db, keys.failures, {member: str(failures)}, now, KEPT)
            else:
                db.execute("DELETE FROM hash WHERE key = ? AND field = ?", (keys.failures, member))
            if clear:
                db.execute("DELETE FROM hash WHERE key = ?", (clear,))
            if self._live(db, keys.lock + member, now) != owner:
                return
            db.execute("DELETE FROM kv WHERE key = ?", (keys.lock + member,))
            if not self._hash_get_all(db, pending, now):
                db.execute("DELETE FROM due WHERE member = ?", (member,))
                return
            # The due table holds the due sets only.
            placed = db.execute(
                "UPDATE due SET at = ? WHERE member = ?", (now + due_in, member)
            ).rowcount
            if not placed:
                db.execute("INSERT INTO due VALUES (?, ?, ?)", (turn.due_key, member, now + due_in))

        self._run(settle)

    def backlog(self, due_keys: list[str], events_key: str) -> Backlog:
        def backlog(db: sqlite3.Connection, now: float) -> Backlog:
            members: dict[str, int] = {}
            oldest: dict[str, float | None] = {}
            for key in due_keys:
                count, first = db.execute(
                    "SELECT count(*), min(at) FROM due WHERE key = ?", (key,)
                ).fetchone()
                members[key], oldest[key] = int(count), first
            events = int(self._live(db, events_key, now) or 0)
            return Backlog(members, max(0, events), oldest)

        return self._run(backlog)

    @classmethod
    def _add_to(cls, db: sqlite3.Connection, key: str, amount: int, now: float) -> None:
        if amount:
            value = int(cls._live(db, key, now) or 0) + amount
            db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?, NULL)", (key, str(value)))

    @staticmethod
    def _due_at(db: sqlite3.Connection, key: str, member: str) -> float | None:
        row = db.execute(
            "SELECT at FROM due WHERE key = ? AND member = ?", (key, member)
        ).fetchone()
        return None if row is None else float(row[0])

    @staticmethod
    def _hash_get(db: sqlite3.Connection, key: str, field: str, now: float) -> str | None:
        row = db.execute(
            "SELECT value FROM hash WHERE key = ? AND field = ? AND expires >= ?", (key, field, now)
        ).fetchone()
        return None if row is None else str(row[0])

    def take_slot(
        self,
        pause_key: str,
        slot_key: str,
        interval: float | None,
        longest_wait: float,
        gate_key: str | None = None,
        count_key: str | None = None,
    ) -> tuple[str, float]:
        def count(db: sqlite3.Connection, now: float) -> None:
            if count_key:
                calls = int(self._live(db, count_key, now) or 0) + 1
                db.execute(
                    "INSERT OR REPLACE INTO kv VALUES (?, ?, ?)", (count_key, str(calls), now + 180)
                )

        def take(db: sqlite3.Connection, now: float) -> tuple[str, float]:
            if gate_key and self._live(db, gate_key, now) is not None:
                return "gated", 0.0
            paused = self._live(db, pause_key, now)
            if paused is not None and float(paused) > now:
                return "paused", float(paused)
            if interval is None:
                count(db, now)
                return "free", 0.0
            slot = max(float(self._live(db, slot_key, now) or 0.0), now)
            if slot - now > longest_wait:
                return "full", slot - now
            db.execute(
                "INSERT OR REPLACE INTO kv VALUES (?, ?, ?)",
                (slot_key, str(slot + interval), slot + interval + 1),
            )
            count(db, now)
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
