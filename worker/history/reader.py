"""Reading an order's or an event's history back, in time order."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Engine, select

from worker.deadletter.selection import format_time
from worker.deadletter.store import engine as engines
from worker.deadletter.store.tables import history


def trace(
    engine: Engine, order_id: int | None = None, event_id: str | None = None
) -> list[dict[str, Any]]:
    """Every record of an order (or an event), oldest first: at, kind, order_id, event_id and
    the kind's details."""
    if (order_id is None) == (event_id is None):
        raise ValueError("trace an order or an event")
    column, value = (
        (history.c.order_id, order_id) if order_id is not None else (history.c.event_id, event_id)
    )
    # A reader never takes SQLite's write lock, so it never waits for (or holds up) the writer.
    with engines.readonly(engine).connect() as connection:
        rows = connection.execute(
            select(history).where(column == value).order_by(history.c.at, history.c.seq)
        ).all()
    return [
        {
            "at": format_time(row.at),
            "kind": row.kind,
            "order_id": row.order_id,
            "event_id": row.event_id,
            **json.loads(row.detail),
        }
        for row in rows
    ]
