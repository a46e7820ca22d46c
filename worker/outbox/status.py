"""What ``order-sync outbox status`` shows: backlog, its age, the last pass, errors, cleanup."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Engine, func, select

from worker.outbox.poller import iso
from worker.outbox.table import as_utc, outbox


def outbox_status(engine: Engine, retention_days: float) -> dict[str, Any]:
    """Counts and times; ``oldest_pending_age_seconds`` is None when nothing is pending."""
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(days=retention_days)
    pending = outbox.c.published_at.is_(None)
    published = outbox.c.published_at.is_not(None)
    with engine.connect() as connection:
        row = connection.execute(
            select(
                func.count().filter(pending).label("pending"),
                func.min(outbox.c.created_at).filter(pending).label("oldest_pending"),
                func.max(outbox.c.published_at).label("last_published"),
                func.count().filter(outbox.c.last_error.is_not(None)).label("errors"),
                func.count().filter(pending & outbox.c.last_error.is_not(None)).label("failing"),
                func.count().filter(published).label("published_kept"),
                func.count().filter(outbox.c.published_at < cutoff).label("awaiting_cleanup"),
            )
        ).one()
    # Ages are measured on this host's clock.
    now = dt.datetime.now(dt.UTC)
    oldest = row.oldest_pending
    return {
        "pending": row.pending,
        "oldest_pending_age_seconds": (
            None if oldest is None else round((now - as_utc(oldest)).total_seconds(), 3)
        ),
        "last_pass_at": None if row.last_published is None else iso(row.last_published),
        "errors": row.errors,
        "pending_with_errors": row.failing,
        "published_kept": row.published_kept,
        "awaiting_cleanup": row.awaiting_cleanup,
    }
