"""Reading an order's or an event's history back, in time order."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import Engine, select

from worker.deadletter.selection import format_time
from worker.deadletter.store import engine as engines
from worker.deadletter.store.tables import history
from worker.history.kinds import APPLIED
from worker.observability.metrics import EVENTS_PER_PUT_BUCKETS


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


def events_per_put(engine: Engine, since: dt.datetime) -> dict[str, int]:
    """How many events each applied PUT carried since ``since``: PUTs per bucket of the
    ``order_sync_events_per_put`` histogram (a bucket "n" counts PUTs of at most n events and
    more than the bucket before; "+Inf" the rest)."""
    with engines.readonly(engine).connect() as connection:
        rows = connection.execute(
            select(history.c.detail).where(history.c.kind == APPLIED, history.c.at >= since)
        ).all()
    sizes: dict[str, int] = {}
    for (detail,) in rows:
        found = json.loads(detail)
        sizes[str(found.get("put_id"))] = len(found.get("events") or [])
    counts = {_bucket(float(bound)): 0 for bound in EVENTS_PER_PUT_BUCKETS}
    counts["+Inf"] = 0
    for size in sizes.values():
        label = next((_bucket(bound) for bound in EVENTS_PER_PUT_BUCKETS if size <= bound), "+Inf")
        counts[label] += 1
    return counts


def _bucket(bound: float) -> str:
    return f"{bound:g}"
