"""What the fleet is doing now, read from the broker and the shared store: the figures
``order-sync status`` prints and the console shows. Each call opens its own connections."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import time
from typing import Any

from worker.deadletter.operations import parse_time
from worker.settings import broker_settings, fleet_settings


def queue_depths() -> dict[str, int]:
    from worker.broker.connection import connect, queue_depths

    with connect(broker_settings()) as connection:
        return queue_depths(connection)


def oldest_waiting() -> dict[str, Any] | None:
    """The event at the head of the events queue, looked at and handed back."""
    from worker.broker.connection import connect
    from worker.broker.topology import EVENTS_QUEUE

    with connect(broker_settings()) as connection:
        channel: Any = connection.channel()
        try:
            message = EVENTS_QUEUE(channel).get(no_ack=False)
            if message is None:
                return None
            try:
                event = json.loads(message.body or b"")
            except (TypeError, ValueError):
                return {"event_id": None, "note": "not JSON"}
        finally:
            channel.close()  # unacknowledged: the message goes back to the head of the queue
    occurred = str(event.get("occurred_at", "")) if isinstance(event, dict) else ""
    age = None
    with contextlib.suppress(ValueError):
        age = round((dt.datetime.now(dt.UTC) - parse_time(occurred)).total_seconds(), 1)
    return {
        "event_id": event.get("event_id") if isinstance(event, dict) else None,
        "occurred_at": occurred or None,
        "age_seconds": age,
    }


def fleet_state() -> dict[str, Any]:
    from worker.coordination.backends import open_store
    from worker.coordination.gate import GATE_KEY, GateState
    from worker.coordination.ratelimit import PAUSE_KEY, SLOT_KEY
    from worker.coordination.tokens import TOKEN_KEY

    fleet = fleet_settings()
    store = open_store(fleet.redis_url, str(fleet.store_path))
    try:
        now = time.time()
        next_slot = float(store.get(SLOT_KEY) or 0)
        paused_until = float(store.get(PAUSE_KEY) or 0)
        token = store.get(TOKEN_KEY)
        gate = store.get(GATE_KEY)
    finally:
        store.close()
    token_age = None
    if token is not None:
        record = json.loads(token)
        token_age = round(now - (float(record["expires_at"]) - float(record["lifetime"])), 1)
    closed = GateState.loads(gate) if gate else None
    return {
        # Whether the fleet calls Sellercloud: "open", or why not (coordination.gate).
        "calls": "open" if closed is None else f"paused: {closed.kind}",
        **(paused(closed, now) if closed else {}),
        "store": "redis" if fleet.redis_url else f"sqlite {fleet.store_path}",
        "rate_limit": str(fleet.rate_limit) if fleet.rate_limit else "off",
        # Slots already promised to callers: how far ahead the fleet has booked the budget.
        "rate_budget_booked_seconds": round(max(0.0, next_slot - now), 1),
        "paused_for_seconds": round(max(0.0, paused_until - now), 1),
        "token_age_seconds": token_age,
    }


def paused(state: Any, now: float) -> dict[str, Any]:
    return {
        "paused_since": dt.datetime.fromtimestamp(state.since, dt.UTC).isoformat(),
        "paused_seconds": round(now - state.since, 1),
        "paused_because": state.reason,
        "paused_last_error": state.error or None,
        "paused_by": state.by or None,
        "next_probe_in_seconds": (
            round(max(0.0, state.next_probe_at - now), 1) if state.next_probe_at else None
        ),
    }


def backlog() -> dict[str, Any]:
    """What waits for the API budget, and when it will be done: orders and events waiting for
    their turn, per lane, the budget used in the last minute, and the time to drain them."""
    from worker.coordination.backends import open_store
    from worker.coordination.backlog import backlog_report
    from worker.coordination.orders import OrderCoordinator

    fleet = fleet_settings()
    store = open_store(fleet.redis_url, str(fleet.store_path))
    try:
        coordinator = OrderCoordinator(store, fleet.dedup_window, fleet.order_lock_ttl)
        report = backlog_report(coordinator, fleet.rate_limit)
    finally:
        store.close()
    budget = fleet.rate_limit
    drain = report.drain_seconds
    return {
        "events_per_put_last_5_minutes": _events_per_put(),
        "orders": report.orders,
        "events": report.events,
        "longest_wait_seconds": report.waited_seconds,
        "calls_last_minute": report.calls_last_minute,
        "budget_per_minute": round(budget.calls * 60 / budget.per_seconds) if budget else None,
        "drain_seconds": None if drain is None else round(drain, 1),
        "done_by": (
            None
            if drain is None
            else dt.datetime.fromtimestamp(time.time() + drain, dt.UTC).isoformat(
                timespec="seconds"
            )
        ),
    }


def _events_per_put() -> dict[str, int] | None:
    """Applied PUTs of the last five minutes by how many events each carried, from the order
    history; None when the history cannot be read."""
    from worker.deadletter.store import engine as engines
    from worker.history.reader import events_per_put
    from worker.settings import database_settings

    try:
        engine = engines.create(database_settings().url)
        try:
            since = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
            return events_per_put(engine, since)
        finally:
            engine.dispose()
    except Exception:
        return None
