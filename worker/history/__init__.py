"""Every order's history: what became of each event the fleet handled (received, applied in
which PUT, skipped as stale or duplicate, retried, dead-lettered), kept for
``ORDER_SYNC_HISTORY_DAYS`` in the project's database and read by ``order-sync trace``.

    kinds      the record kinds, declared once
    recorder   HistoryRecorder: record() buffers, a thread writes batches
    reader     trace(): an order's or an event's records in time order

The apply path calls ``current().record(kinds.APPLIED, order_id=..., event_id=..., ...)``;
``current()`` builds the process's recorder on first use (after a fork, a new one).
"""

from __future__ import annotations

import atexit
import os
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from worker.history.recorder import HistoryRecorder

_lock = threading.Lock()
_current: tuple[int, HistoryRecorder] | None = None


def current() -> HistoryRecorder:
    """This process's recorder, on the configured database (built on first call)."""
    global _current  # noqa: PLW0603 (one per process, built lazily)
    current = _current
    if current is not None and current[0] == os.getpid():
        return current[1]
    with _lock:
        if _current is None or _current[0] != os.getpid():
            from worker.deadletter.store import engine as engines
            from worker.history.recorder import HistoryRecorder
            from worker.settings import database_settings

            settings = database_settings()
            engine = engines.create(settings.url)
            engines.upgrade(engine)
            built = HistoryRecorder(engine, settings.history_days)
            atexit.register(built.close)
            _current = (os.getpid(), built)
        return _current[1]
