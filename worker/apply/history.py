"""What the apply path tells every order's history (``worker.history``), and why it never waits.

History is a record, not a guarantee: ``note`` only appends to the recorder's buffer, and if the
recorder cannot be built (the database is unreachable at first use) the worker goes on without
it, trying again a minute later.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import structlog

from worker.history import current

log = structlog.get_logger(__name__)

RETRY_SECONDS = 60.0
_unavailable_until = 0.0
_lock = threading.Lock()


def note(kind: str, *, order_id: int | None, event_id: str | None, **detail: Any) -> None:
    """Record what became of one event (``kind``: one of ``worker.history.kinds.KINDS``)."""
    global _unavailable_until  # noqa: PLW0603 (one state per process)
    if time.monotonic() < _unavailable_until:
        return
    try:
        current().record(kind, order_id=order_id, event_id=event_id, **detail)
    except Exception as exc:
        with _lock:
            if time.monotonic() >= _unavailable_until:
                log.warning("order history unavailable; events go on", error=str(exc))
            _unavailable_until = time.monotonic() + RETRY_SECONDS
