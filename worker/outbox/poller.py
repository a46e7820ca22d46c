"""Passes over the outbox table: publish pending rows as events, in ``id`` order, at least once.

Plain functions (no Celery) so the beat task, ``order-sync outbox run-once`` and the tests run
the same code. One pass is one database transaction: the rows it takes are locked (``FOR UPDATE
SKIP LOCKED`` on PostgreSQL, the write lock on SQLite), so concurrent pollers never take the same
row, and a row is marked published only after the broker confirmed its event. A crash after the
publish and before the commit publishes those rows again next pass; consumers de-duplicate by
``event_id``.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from marshmallow import ValidationError
from sqlalchemy import Connection, Engine, Row, bindparam, delete, func, select, update

from schemas.errors import flatten_errors
from schemas.event import load_event
from worker.deadletter.entries import new_entry
from worker.outbox.sink import EventSink, Outgoing
from worker.outbox.table import as_utc, outbox

#: Rows deleted per statement by the retention cleanup: short transactions, short locks.
CLEANUP_CHUNK = 1000
MAX_ERROR_CHARS = 2000

_PENDING = outbox.c.published_at.is_(None)
# What a pass selects: id, event_id, order_id, occurred_at, changes, created_at.
OutboxRow = Row[Any, Any, Any, Any, Any, Any]


@dataclass
class PassResult:
    published: int = 0
    dead_lettered: int = 0
    failed: int = 0
    taken: int = 0  # rows the pass read; fewer than the batch size means the outbox is drained
    cleaned: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def add(self, other: PassResult) -> None:
        self.published += other.published
        self.dead_lettered += other.dead_lettered
        self.failed += other.failed
        self.taken += other.taken
        self.cleaned += other.cleaned
        self.error = other.error or self.error

    def counts(self) -> dict[str, int]:
        return {
            k: v for k, v in asdict(self).items() if k in ("published", "dead_lettered", "failed")
        }


def iso(value: dt.datetime) -> str:
    return as_utc(value).isoformat().replace("+00:00", "Z")


#: What ``row_event`` reads of a row, and what the poller selects.
ROW_COLUMNS = (
    outbox.c.id,
    outbox.c.event_id,
    outbox.c.order_id,
    outbox.c.occurred_at,
    outbox.c.changes,
    outbox.c.created_at,
)
# A row written longer ago than this is published as a catch-up (bulk): the poller is behind,
# and the changes written just now should go before it.
CATCH_UP_SECONDS = 60.0


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def row_event(row: OutboxRow) -> dict[str, Any]:
    """The event a row stands for, shaped exactly as an upstream would publish it."""
    return {
        "event_id": row.event_id,
        "order_id": row.order_id,
        "occurred_at": iso(row.occurred_at),
        "changes": row.changes,
    }


def run_pass(
    engine: Engine, sink: EventSink, batch_size: int, retention_days: float | None = None
) -> PassResult:
    """Publish up to ``batch_size`` pending rows; then delete published rows past retention."""
    with engine.begin() as connection:
        result = _publish_batch(connection, sink, batch_size)
    if retention_days is not None:
        result.cleaned = cleanup(engine, retention_days)
    return result


def run_until_empty(
    engine: Engine,
    sink: EventSink,
    batch_size: int,
    *,
    time_budget: float | None = None,
    retention_days: float | None = None,
) -> PassResult:
    """Passes until the outbox is drained, a pass fails, or ``time_budget`` seconds are used."""
    started = time.monotonic()
    total = PassResult()
    while True:
        result = run_pass(engine, sink, batch_size, retention_days)
        total.add(result)
        if not result.ok or result.taken < batch_size:
            return total
        if time_budget is not None and time.monotonic() - started >= time_budget:
            return total


def _publish_batch(connection: Connection, sink: EventSink, batch_size: int) -> PassResult:
    rows = connection.execute(
        select(*ROW_COLUMNS)
        .where(_PENDING)
        .order_by(outbox.c.id)
        .limit(batch_size)
        .with_for_update(skip_locked=True)  # rendered on PostgreSQL only
    ).all()
    result = PassResult(taken=len(rows))
    valid: list[tuple[int, Outgoing]] = []
    catching_up = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=CATCH_UP_SECONDS)
    for row in rows:
        event = row_event(row)
        try:
            load_event(event)
        except ValidationError as exc:
            _dead_letter(connection, sink, row, event, exc, result)
            continue
        body = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
        bulk = _aware(row.created_at) < catching_up
        valid.append((row.id, Outgoing(body, row.event_id, bulk=bulk)))

    batch = sink.publish_batch([outgoing for _, outgoing in valid])
    confirmed = [row_id for index, (row_id, _) in enumerate(valid) if index in batch.confirmed]
    unconfirmed = [
        row_id for index, (row_id, _) in enumerate(valid) if index not in batch.confirmed
    ]
    if confirmed:
        connection.execute(
            update(outbox).where(outbox.c.id.in_(confirmed)).values(published_at=func.now())
        )
    if unconfirmed:
        _mark_failed(connection, unconfirmed, batch.error or "not confirmed by the broker")
    result.published += len(confirmed)
    result.failed += len(unconfirmed)
    result.error = result.error or batch.error
    return result


def _dead_letter(
    connection: Connection,
    sink: EventSink,
    row: OutboxRow,
    event: dict[str, Any],
    exc: ValidationError,
    result: PassResult,
) -> None:
    """A row that can never become a valid event is handled once, not retried forever."""
    problems = [{"field": path, "message": msg} for path, msg in flatten_errors(exc.messages)]
    error = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
    entry = _entry(row, event, error, problems)
    try:
        sink.dead_letter(entry)
    except Exception as failure:
        _mark_failed(connection, [row.id], f"dead-lettering failed: {failure}")
        result.failed += 1
        result.error = result.error or f"dead-lettering failed: {failure}"
        return
    connection.execute(
        update(outbox)
        .where(outbox.c.id == row.id)
        .values(
            published_at=func.now(),
            attempts=outbox.c.attempts + 1,
            last_error=error[:MAX_ERROR_CHARS],
        )
    )
    result.dead_lettered += 1


def _entry(
    row: OutboxRow, event: dict[str, Any], error: str, problems: list[dict[str, str]]
) -> dict[str, Any]:
    return new_entry(
        reason="invalid_event",
        error=error,
        field_errors=problems,
        event=event,
        event_id=row.event_id,
        order_id=row.order_id,
        attempts=1,
        outbox_row_id=row.id,
    )


def _mark_failed(connection: Connection, row_ids: Sequence[int], error: str) -> None:
    connection.execute(
        update(outbox)
        .where(outbox.c.id.in_(bindparam("ids", expanding=True)))
        .values(attempts=outbox.c.attempts + 1, last_error=error[:MAX_ERROR_CHARS]),
        {"ids": list(row_ids)},
    )


def cleanup(engine: Engine, retention_days: float) -> int:
    """Delete published rows older than the retention, a chunk per transaction."""
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(days=retention_days)
    deleted = 0
    while True:
        chunk = (
            select(outbox.c.id)
            .where(outbox.c.published_at < cutoff)
            .limit(CLEANUP_CHUNK)
            .scalar_subquery()
        )
        with engine.begin() as connection:
            count = connection.execute(delete(outbox).where(outbox.c.id.in_(chunk))).rowcount
        deleted += count
        if count < CLEANUP_CHUNK:
            return deleted
