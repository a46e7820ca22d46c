"""``HistoryRecorder``: what became of each event, written without slowing the worker down.

``record`` only appends to an in-memory buffer (a lock-free deque append); a background thread
writes the buffer in batches, one transaction each, every ``FLUSH_SECONDS`` or as soon as a
batch is full, and deletes records older than the retention period hourly. If the database is
unreachable the records wait in memory, up to ``MAX_BUFFERED``; beyond that the oldest are
dropped (and counted in a log line): history is a record, not a guarantee, and must never hold
up an event. ``close`` writes what is left.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections import deque
from typing import Any

import structlog
from sqlalchemy import Engine, delete, insert

from worker.deadletter.store.tables import history
from worker.history.kinds import KINDS

log = structlog.get_logger(__name__)

FLUSH_SECONDS = 0.5
BATCH = 2000
MAX_BUFFERED = 200_000
EXPIRE_EVERY = 3600.0


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


class HistoryRecorder:
    def __init__(self, engine: Engine, retention_days: float = 7.0) -> None:
        self.engine = engine
        self.retention = dt.timedelta(days=retention_days)
        self.buffer: deque[dict[str, Any]] = deque()
        self.dropped = 0
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.next_expiry = time.monotonic()
        self.lock = threading.Lock()  # one writer at a time: the thread, or close()
        self.thread = threading.Thread(target=self._run, name="history-recorder", daemon=True)
        self.thread.start()

    def record(
        self,
        kind: str,
        *,
        order_id: int | None,
        event_id: str | None,
        at: dt.datetime | None = None,
        **detail: Any,
    ) -> None:
        """Note what became of an event (``kind``: one of ``kinds.KINDS``); returns at once."""
        if kind not in KINDS:
            raise ValueError(f"unknown history kind {kind!r}; one of {', '.join(KINDS)}")
        self.buffer.append(
            {
                "at": at or dt.datetime.now(dt.UTC),
                "kind": kind,
                "order_id": order_id,
                "event_id": event_id,
                "detail": detail,
            }
        )
        if len(self.buffer) >= BATCH:
            self.wake.set()

    def flush(self) -> int:
        """Write everything buffered now; how many records were written."""
        written = 0
        with self.lock:
            while self.buffer:
                batch: list[dict[str, Any]] = []
                while self.buffer and len(batch) < BATCH:
                    batch.append(self.buffer.popleft())
                rows = [{**r, "detail": _dumps(r["detail"])} for r in batch]
                try:
                    with self.engine.begin() as connection:
                        connection.execute(insert(history), rows)
                except Exception:
                    self.buffer.extendleft(reversed(batch))
                    self._bound()
                    raise
                written += len(batch)
        return written

    def expire(self, now: dt.datetime | None = None) -> int:
        """Delete records older than the retention period; how many."""
        cutoff = (now or dt.datetime.now(dt.UTC)) - self.retention
        with self.engine.begin() as connection:
            return connection.execute(delete(history).where(history.c.at < cutoff)).rowcount

    def close(self) -> None:
        """Stop the thread and write what is left (called at exit)."""
        self.stopping.set()
        self.wake.set()
        self.thread.join(timeout=30)
        try:
            self.flush()
        except Exception as exc:
            log.error("history records not written at exit", error=str(exc), lost=len(self.buffer))
        self.engine.dispose()

    def _bound(self) -> None:
        excess = len(self.buffer) - MAX_BUFFERED
        for _ in range(max(0, excess)):
            self.buffer.popleft()
        if excess > 0:
            self.dropped += excess
            log.warning("history records dropped: database unavailable", dropped=self.dropped)

    def _run(self) -> None:
        wait = FLUSH_SECONDS
        while not self.stopping.is_set():
            self.wake.wait(wait)
            self.wake.clear()
            try:
                self.flush()
                if time.monotonic() >= self.next_expiry:
                    self.next_expiry = time.monotonic() + EXPIRE_EVERY
                    self.expire()
                wait = FLUSH_SECONDS
            except Exception as exc:
                wait = min(max(wait * 2, 1.0), 30.0)
                log.error("history records not written yet", error=str(exc), retry_in=wait)
