"""A worker run on this machine against the Sellercloud simulator: its environment, events to
feed it, and waiting for what it does.

``order-sync demo`` runs one such worker; the integration tests and the benchmarks run many,
and use these same pieces (this module imports nothing from them).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

#: How long :func:`wait_for` waits unless told otherwise.
DEFAULT_TIMEOUT = 30.0


def worker_env(
    *,
    simulator_url: str,
    username: str,
    password: str,
    data_dir: str | Path,
    broker_url: str | None = None,
    store_url: str | None = None,
    inherit_settings: bool = False,
    **overrides: str,
) -> dict[str, str]:
    """The environment of a worker process (or a command run beside it) on this machine.

    It starts from this process's environment without its ``CELERY_*`` and ``ORDER_SYNC_*``
    settings, so the worker gets only what is given here: the Sellercloud URL and login, the
    data folder, the broker (the embedded one, in ``data_dir``, when ``broker_url`` is None),
    the shared store (``ORDER_SYNC_REDIS_URL``, when ``store_url`` is given), JSON logs,
    unbuffered output, then ``overrides`` (any variable, applied last).

    ``inherit_settings`` keeps the caller's settings other than the broker URL, as the demo
    does for an operator who set, say, ``ORDER_SYNC_LOG_FORMAT``; what is given here still wins.
    """
    cleared = ("CELERY_BROKER",) if inherit_settings else ("CELERY_", "ORDER_SYNC")
    env = {key: value for key, value in os.environ.items() if not key.startswith(cleared)}
    env.setdefault("ORDER_SYNC_LOG_FORMAT", "json")
    env.update(
        ORDER_SYNC_DATA_DIR=str(data_dir),
        SELLERCLOUD_BASE_URL=simulator_url,
        SELLERCLOUD_USERNAME=username,
        SELLERCLOUD_PASSWORD=password,
        PYTHONUNBUFFERED="1",
    )
    if broker_url:
        env["CELERY_BROKER_URL"] = broker_url
    if store_url is not None:
        env["ORDER_SYNC_REDIS_URL"] = store_url
    env.update(overrides)
    return env


def make_event(order_id: int, event_id: str | None = None, **changes: Any) -> dict[str, Any]:
    """An order-change event as upstream publishes it (``changes`` default to a customer id)."""
    return {
        "event_id": event_id or f"evt-{uuid.uuid4().hex[:12]}",
        "order_id": order_id,
        "occurred_at": "2026-11-26T10:00:00Z",
        "changes": changes or {"customer_id": order_id % 1000},
    }


def wait_for(
    condition: Callable[[], T],
    timeout: float = DEFAULT_TIMEOUT,
    what: str = "",
    *,
    interval: float = 0.05,
) -> T:
    """Poll ``condition()`` until it is truthy and return it; ``TimeoutError`` naming ``what``
    if it still is not after ``timeout`` seconds (it is always asked at least once)."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what or condition}")
        time.sleep(interval)
    return result
