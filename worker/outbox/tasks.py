"""The Celery side of the outbox: the poll task and its beat schedule entry.

Beat sends ``order_sync.outbox_poll`` every ``ORDER_SYNC_OUTBOX_INTERVAL`` seconds; any worker
runs it. Each tick expires after one interval, so ticks that queue up while no worker runs are
dropped rather than run back to back. Overlapping runs are safe: rows are locked per pass
(SKIP LOCKED on PostgreSQL, the write lock on SQLite).
"""

from __future__ import annotations

from functools import cache
from typing import Any

import structlog
from celery import shared_task
from sqlalchemy import Engine

from worker.outbox.db import outbox_engine
from worker.outbox.poller import run_until_empty
from worker.outbox.sink import EventSink
from worker.settings import ConfigError, OutboxSettings, broker_settings, outbox_settings

log = structlog.get_logger(__name__)

OUTBOX_POLL = "order_sync.outbox_poll"
DEFAULT_INTERVAL = 2.0


@cache
def _engine(settings: OutboxSettings) -> Engine:
    # One engine (one connection pool) per process, not one per tick.
    return outbox_engine(settings)


@shared_task(name=OUTBOX_POLL, ignore_result=True)
def outbox_poll() -> dict[str, int]:
    """Publish pending outbox rows until none are left or about one interval is used."""
    settings = outbox_settings()
    with EventSink(broker_settings()) as sink:
        result = run_until_empty(
            _engine(settings),
            sink,
            settings.batch,
            time_budget=settings.interval,
            retention_days=settings.retention_days,
        )
    if not result.ok:
        log.warning("outbox pass failed", error=result.error, **result.counts())
    elif result.published or result.dead_lettered or result.cleaned:
        log.info("outbox pass", cleaned=result.cleaned, **result.counts())
    return result.counts()


def beat_schedule() -> dict[str, Any]:
    """The beat entry that sends ``order_sync.outbox_poll`` every interval."""
    try:
        interval = outbox_settings().interval
    except ConfigError as exc:
        # The worker must still start for events; the task itself reports the problem each run.
        log.error("outbox settings are invalid", error=str(exc))
        interval = DEFAULT_INTERVAL
    return {
        OUTBOX_POLL: {"task": OUTBOX_POLL, "schedule": interval, "options": {"expires": interval}}
    }
