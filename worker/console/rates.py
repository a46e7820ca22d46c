"""Events applied and dead-lettered per minute over the last minutes, counted in the database
in one grouped query each (an index range on the time column, never a page of rows)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Engine, func, select


def _minute(engine: Engine, column: Any) -> Any:
    if engine.dialect.name == "postgresql":
        return func.to_char(func.date_trunc("minute", column), "YYYY-MM-DD HH24:MI")
    # SQLite keeps these times as text, "2026-11-27 03:04:05.123456": the minute is a prefix.
    return func.substr(column, 1, 16)


def _counts(engine: Engine, column: Any, since: dt.datetime, *conditions: Any) -> dict[str, int]:
    bucket = _minute(engine, column).label("minute")
    query = (
        select(bucket, func.count().label("count"))
        .where(column >= since, *conditions)
        .group_by(bucket)
    )
    with engine.connect() as connection:
        return {str(minute): int(count) for minute, count in connection.execute(query)}


def per_minute(
    engine: Engine, minutes: int, now: dt.datetime | None = None
) -> list[dict[str, Any]]:
    """``[{"minute": "03:04", "applied": n, "dead_lettered": n}, ...]``, oldest first, the
    current (partial) minute last."""
    from worker.deadletter.store.tables import entries, history
    from worker.history.kinds import APPLIED

    end = (now or dt.datetime.now(dt.UTC)).replace(second=0, microsecond=0)
    start = end - dt.timedelta(minutes=minutes - 1)
    applied = _counts(engine, history.c.at, start, history.c.kind == APPLIED)
    dead = _counts(engine, entries.c.dead_lettered_at, start)
    rows = []
    for i in range(minutes):
        key = (start + dt.timedelta(minutes=i)).strftime("%Y-%m-%d %H:%M")
        rows.append(
            {"minute": key[11:], "applied": applied.get(key, 0), "dead_lettered": dead.get(key, 0)}
        )
    return rows
