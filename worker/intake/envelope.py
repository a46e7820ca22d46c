"""From a raw broker message to a validated event, as plain functions.

    raw message ──envelope──▶ task argument ──decode──▶ JSON ──load_event──▶ OrderChange

``EventRejected`` means the event can never succeed as published and goes to the dead-letter
queue at once, with one of the reasons in ``worker.deadletter.reasons``.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from marshmallow import ValidationError

from schemas.errors import flatten_errors
from schemas.event import OrderChange, load_event
from worker.deadletter.entries import EventContext, utc_now
from worker.deadletter.reasons import (
    INVALID_EVENT,
    INVALID_JSON,
    TOO_LARGE,
    UNSUPPORTED_CONTENT_TYPE,
)

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
            UNSUPPORTED_CONTENT_TYPE,
            f"content type {content_type!r} is not JSON; publish events as application/json",
        )
    if env.get("truncated"):
        raise EventRejected(
            TOO_LARGE,
            f"the body is {env.get('size')} bytes, over the {MAX_EVENT_BYTES // 1024} KiB limit "
            f"for one event (its first {KEPT_OF_OVERSIZED // 1024} KiB are kept)",
        )
    if env.get("body_encoding") == BASE64:
        raise EventRejected(INVALID_JSON, "the body is not UTF-8 text, so it cannot be JSON")
    try:
        return json.loads(env["body"])
    except (ValueError, RecursionError) as exc:
        raise EventRejected(INVALID_JSON, f"the body is not valid JSON: {exc}") from exc


def parse(payload: Any) -> OrderChange:
    try:
        return load_event(payload)
    except ValidationError as exc:
        problems = [{"field": path, "message": msg} for path, msg in flatten_errors(exc.messages)]
        summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
        raise EventRejected(INVALID_EVENT, summary, problems) from exc


def prepare(
    env: dict[str, Any], context: EventContext, validated: dict[str, Any] | None = None
) -> OrderChange:
    """Decode and validate, recording each step in ``context``; raises EventRejected.

    ``validated`` is what ``as_validated`` made of this same event earlier in the worker: the
    schema has passed it already and does not run again.
    """
    context.payload = decode(env)
    context.note_ids()
    if validated is not None:
        return OrderChange(
            event_id=validated["event_id"],
            order_id=validated["order_id"],
            occurred_at=dt.datetime.fromisoformat(validated["occurred_at"]),
            changes=validated["changes"],
        )
    return parse(context.payload)


def as_validated(event: OrderChange) -> dict[str, Any]:
    """A validated event as a JSON-safe task argument, for ``prepare`` to take as it is."""
    return {
        "event_id": event.event_id,
        "order_id": event.order_id,
        "occurred_at": event.occurred_at.isoformat(),
        "changes": event.changes,
    }
