"""What a dead-letter entry says: the event, how far it got, what failed and why.

An entry is a JSON object with a ``reason`` (see ``reasons``); a replayed event carries its
earlier failures in a header, and the entry of a copy that fails again keeps that history.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from worker.deadletter.reasons import INTERNAL_ERROR, RETRIES_EXHAUSTED
from worker.sellercloud.client import response_json
from worker.sellercloud.errors import SellercloudError, TransientError

#: Header on a replayed event: the JSON list of its earlier failures and replays.
HISTORY_HEADER = "x-order-sync-history"


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class EventContext:
    """How far one event got: what its dead-letter entry needs to explain the failure."""

    payload: Any = None
    event_id: str | None = None
    order_id: int | None = None
    body: dict[str, Any] | None = None

    def note_ids(self) -> None:
        """Keep the ids of a payload that may be invalid, where they are usable."""
        if isinstance(self.payload, dict):
            event_id, order_id = self.payload.get("event_id"), self.payload.get("order_id")
            self.event_id = event_id if isinstance(event_id, str) else None
            if isinstance(order_id, int) and not isinstance(order_id, bool):
                self.order_id = order_id
        # Every log line about this event from here on carries its ids.
        structlog.contextvars.bind_contextvars(event_id=self.event_id, order_id=self.order_id)


def new_entry(
    *,
    reason: str,
    error: str,
    attempts: int,
    event: Any = None,
    **details: Any,
) -> dict[str, Any]:
    """A dead-letter entry; ``details`` add optional keys (order_id, status_code, ...)."""
    entry: dict[str, Any] = {
        "id": uuid.uuid4().hex,
        "reason": reason,
        "error": error,
        "event_id": None,
        "order_id": None,
        "event": event,
        "status_code": None,
        "response_body": None,
        "attempts": attempts,
        "dead_lettered_at": utc_now(),
        "history": [],
    }
    entry.update({key: value for key, value in details.items() if value is not None})
    return entry


def _entry(
    env: dict[str, Any], context: EventContext, attempts: int, **details: Any
) -> dict[str, Any]:
    kept_raw = context.payload is None
    return new_entry(
        attempts=attempts,
        event=context.payload,
        event_id=context.event_id,
        order_id=context.order_id,
        raw_body=env.get("body") if kept_raw else None,
        raw_body_encoding=env.get("body_encoding") if kept_raw else None,
        content_type=env.get("content_type"),
        correlation_id=env.get("correlation_id"),
        first_received_at=env.get("received_at"),
        history=env.get("history") or None,
        **details,
    )


class Rejection(Protocol):
    """Why an event can never succeed as published (``intake.envelope.EventRejected``)."""

    reason: str
    error: str
    field_errors: list[dict[str, str]]


def rejected_entry(
    env: dict[str, Any], context: EventContext, rejected: Rejection, attempts: int
) -> dict[str, Any]:
    return _entry(
        env,
        context,
        attempts,
        reason=rejected.reason,
        error=rejected.error,
        field_errors=rejected.field_errors or None,
    )


def api_failure_entry(
    env: dict[str, Any], context: EventContext, error: SellercloudError, attempts: int
) -> dict[str, Any]:
    """A 4xx, or a transient failure that outlasted the retries (``retries_exhausted``)."""
    exhausted = isinstance(error, TransientError)
    return _entry(
        env,
        context,
        attempts,
        reason=RETRIES_EXHAUSTED if exhausted else error.reason,
        error=str(error),
        last_error_reason=error.reason if exhausted else None,
        request={"method": "PUT", "path": f"/Orders/{context.order_id}", "body": context.body},
        status_code=error.status_code,
        response_body=response_json(error.response_body),
    )


def internal_error_entry(
    env: dict[str, Any], context: EventContext, exc: BaseException, trace: str, attempts: int
) -> dict[str, Any]:
    return _entry(
        env,
        context,
        attempts,
        reason=INTERNAL_ERROR,
        error=f"{type(exc).__name__}: {exc}",
        traceback=trace,
    )


def replay_history(headers: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The history a replayed event carries; empty for a first delivery or a malformed header."""
    raw = (headers or {}).get(HISTORY_HEADER)
    try:
        history = json.loads(raw) if isinstance(raw, str | bytes) else None
    except (ValueError, RecursionError):
        return []
    return [step for step in history if isinstance(step, dict)] if isinstance(history, list) else []


def replay_step(entry: dict[str, Any], patch: Any = None) -> dict[str, Any]:
    """What an entry's history gains when it is replayed: the failure it had, and the fix."""
    step = {
        "replayed_at": utc_now(),
        "dead_letter_id": entry.get("id"),
        "dead_lettered_at": entry.get("dead_lettered_at"),
        "reason": entry.get("reason"),
        "status_code": entry.get("status_code"),
        "error": entry.get("error"),
        "attempts": entry.get("attempts"),
    }
    if patch is not None:
        step["patch"] = patch
    return step
