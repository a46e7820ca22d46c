"""What happens to one event, as plain functions (the Celery task only wires them up).

    raw message ──envelope──▶ task ──decode──▶ JSON ──load_event──▶ OrderChange
                                              ──update_order_body──▶ PUT /Orders/{id}

``EventRejected`` means the event can never succeed as published and goes to the dead-letter
queue at once; ``SellercloudError`` subclasses say whether the API call is worth retrying.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

import structlog
from marshmallow import ValidationError

from schemas.errors import flatten_errors
from schemas.event import OrderChange, load_event
from worker import deadletter
from worker.deadletter import utc_now
from worker.sellercloud.client import response_json
from worker.sellercloud.errors import SellercloudError, TransientError

MAX_EVENT_BYTES = 256 * 1024
KEPT_OF_OVERSIZED = 4 * 1024
JSON_CONTENT_TYPES = frozenset({"application/json", "text/json", ""})
UTF8 = "utf-8"
BASE64 = "base64"


@dataclass
class EventRejected(Exception):
    """An event that cannot succeed as published; ``reason`` is its dead-letter reason."""

    reason: str
    error: str
    field_errors: list[dict[str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        return self.error


def envelope(
    body: bytes | str,
    *,
    content_type: str | None,
    message_id: str | None = None,
    correlation_id: str | None = None,
    history: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A raw broker message as a JSON-safe task argument, with the body kept exactly.

    An oversized body is cut to its first few KiB here, before it becomes a task message: the
    event is dead-lettered as ``too_large`` and the start is enough to tell what it was.
    """
    raw = body.encode(UTF8, errors="surrogatepass") if isinstance(body, str) else body
    size = len(raw)
    truncated = size > MAX_EVENT_BYTES
    if truncated:
        raw = raw[:KEPT_OF_OVERSIZED]
    try:
        text, encoding = raw.decode(UTF8), UTF8
    except UnicodeDecodeError:
        if truncated:  # the cut may split a character; the start is kept for people to read
            text, encoding = raw.decode(UTF8, errors="replace"), UTF8
        else:
            text, encoding = base64.b64encode(raw).decode("ascii"), BASE64
    return {
        "body": text,
        "body_encoding": encoding,
        "size": size,
        "truncated": truncated,
        "content_type": content_type,
        "message_id": message_id,
        "correlation_id": correlation_id,
        "received_at": utc_now(),
        "history": history or [],
    }


def decode(env: dict[str, Any]) -> Any:
    """The event's JSON value, or EventRejected saying why there is none."""
    content_type = (env.get("content_type") or "").split(";")[0].strip().lower()
    if content_type not in JSON_CONTENT_TYPES and not content_type.endswith("+json"):
        raise EventRejected(
            "unsupported_content_type",
            f"content type {content_type!r} is not JSON; publish events as application/json",
        )
    if env.get("truncated"):
        raise EventRejected(
            "too_large",
            f"the body is {env.get('size')} bytes, over the {MAX_EVENT_BYTES // 1024} KiB limit "
            f"for one event (its first {KEPT_OF_OVERSIZED // 1024} KiB are kept)",
        )
    if env.get("body_encoding") == BASE64:
        raise EventRejected("invalid_json", "the body is not UTF-8 text, so it cannot be JSON")
    try:
        return json.loads(env["body"])
    except (ValueError, RecursionError) as exc:
        raise EventRejected("invalid_json", f"the body is not valid JSON: {exc}") from exc


def parse(payload: Any) -> OrderChange:
    try:
        return load_event(payload)
    except ValidationError as exc:
        problems = [{"field": path, "message": msg} for path, msg in flatten_errors(exc.messages)]
        summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
        raise EventRejected("invalid_event", summary, problems) from exc


@dataclass
class Progress:
    """How far one event got; what a dead-letter entry needs to explain the failure."""

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


def prepare(
    env: dict[str, Any], progress: Progress, validated: dict[str, Any] | None = None
) -> OrderChange:
    """Decode and validate, recording each step in ``progress``; raises EventRejected.

    ``validated`` is what ``as_validated`` made of this same event earlier in the worker: the
    schema has passed it already and does not run again.
    """
    progress.payload = decode(env)
    progress.note_ids()
    if validated is not None:
        return OrderChange(
            event_id=validated["event_id"],
            order_id=validated["order_id"],
            occurred_at=dt.datetime.fromisoformat(validated["occurred_at"]),
            changes=validated["changes"],
        )
    return parse(progress.payload)


def as_validated(event: OrderChange) -> dict[str, Any]:
    """A validated event as a JSON-safe task argument, for ``prepare`` to take as it is."""
    return {
        "event_id": event.event_id,
        "order_id": event.order_id,
        "occurred_at": event.occurred_at.isoformat(),
        "changes": event.changes,
    }


def _entry(
    env: dict[str, Any], progress: Progress, attempts: int, **details: Any
) -> dict[str, Any]:
    kept_raw = progress.payload is None
    return deadletter.new_entry(
        attempts=attempts,
        event=progress.payload,
        event_id=progress.event_id,
        order_id=progress.order_id,
        raw_body=env.get("body") if kept_raw else None,
        raw_body_encoding=env.get("body_encoding") if kept_raw else None,
        content_type=env.get("content_type"),
        correlation_id=env.get("correlation_id"),
        first_received_at=env.get("received_at"),
        history=env.get("history") or None,
        **details,
    )


def rejected_entry(
    env: dict[str, Any], progress: Progress, rejected: EventRejected, attempts: int
) -> dict[str, Any]:
    return _entry(
        env,
        progress,
        attempts,
        reason=rejected.reason,
        error=rejected.error,
        field_errors=rejected.field_errors or None,
    )


def api_failure_entry(
    env: dict[str, Any], progress: Progress, error: SellercloudError, attempts: int
) -> dict[str, Any]:
    """A 4xx, or a transient failure that outlasted the retries (``retries_exhausted``)."""
    exhausted = isinstance(error, TransientError)
    return _entry(
        env,
        progress,
        attempts,
        reason="retries_exhausted" if exhausted else error.reason,
        error=str(error),
        last_error_reason=error.reason if exhausted else None,
        request={"method": "PUT", "path": f"/Orders/{progress.order_id}", "body": progress.body},
        status_code=error.status_code,
        response_body=response_json(error.response_body),
    )


def internal_error_entry(
    env: dict[str, Any], progress: Progress, exc: BaseException, trace: str, attempts: int
) -> dict[str, Any]:
    return _entry(
        env,
        progress,
        attempts,
        reason="internal_error",
        error=f"{type(exc).__name__}: {exc}",
        traceback=trace,
    )
