"""The dead-letter queue: entries that say what failed and why, and a way to read them back.

An entry is a JSON object; its ``reason`` is a short stable word per kind of failure, so
operators (and ``order-sync dlq``) can group and replay by cause:

    invalid_json              the message body is not JSON (``raw_body`` keeps it)
    unsupported_content_type  published with a content type other than JSON
    too_large                 the body is over the size limit
    invalid_event             JSON that breaks the event contract (``field_errors`` name fields)
    api_rejected              Sellercloud answered 400 or another 4xx
    order_not_found           Sellercloud answered 404
    retries_exhausted         transient failures (5xx, timeouts, 429, token trouble) outlasted
                              the retry budget
    internal_error            a bug of ours; the entry carries the exception
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from kombu import Connection, Consumer, Message, Producer

from worker.broker import PERSISTENT, PUBLISH_RETRY_POLICY
from worker.topology import DEAD_LETTER_EXCHANGE, DEAD_LETTER_QUEUE

#: Every ``reason`` an entry can have (documented above).
REASONS = (
    "invalid_json",
    "unsupported_content_type",
    "too_large",
    "invalid_event",
    "api_rejected",
    "order_not_found",
    "retries_exhausted",
    "internal_error",
)
#: Header on a replayed event: the JSON list of its earlier failures and replays.
HISTORY_HEADER = "x-order-sync-history"


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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


def publish(producer: Producer, entry: dict[str, Any]) -> None:
    """Store an entry durably; returns once the broker has it (confirms on AMQP)."""
    producer.publish(
        entry,
        exchange=DEAD_LETTER_EXCHANGE,
        routing_key=DEAD_LETTER_QUEUE.routing_key,
        declare=[DEAD_LETTER_QUEUE],
        serializer="json",
        delivery_mode=PERSISTENT,
        message_id=entry["id"],
        headers={"x-order-sync-reason": entry["reason"]},
        retry=True,
        retry_policy=PUBLISH_RETRY_POLICY,
    )


@dataclass
class Delivery:
    """One entry taken from the queue, unacknowledged: ``remove()`` deletes it for good."""

    entry: dict[str, Any] | None  # None for a message that is not a JSON object
    message: Message

    def remove(self) -> None:
        self.message.ack()


IDLE_SECONDS = 2.0


@contextmanager
def deliveries(connection: Connection) -> Iterator[tuple[int, Iterator[Delivery]]]:
    """``(depth, deliveries)``: every entry waiting now, oldest first, none consumed yet.

    Entries are held unacknowledged on one channel, so no other reader sees them meanwhile (two
    replays never take the same entry). Whatever was not removed goes back when the block ends,
    in its old place, and so does everything if the process dies: a crash never loses an entry.
    """
    channel: Any = connection.channel()
    try:
        queue: Any = DEAD_LETTER_QUEUE(channel)
        depth = int(queue.queue_declare().message_count)
        arrived: deque[Message] = deque()
        # No prefetch limit: entries left in place stay unacknowledged until the end.
        consumer = Consumer(
            channel, [queue], on_message=arrived.append, prefetch_count=0, no_ack=False
        )
        consumer.consume()

        def stream() -> Iterator[Delivery]:
            seen = 0
            while seen < depth:
                if not arrived:
                    try:
                        connection.drain_events(timeout=IDLE_SECONDS)
                    except TimeoutError:
                        return
                    continue
                message = arrived.popleft()
                seen += 1
                try:
                    body = json.loads(message.body or b"")
                except (TypeError, ValueError):
                    body = None
                yield Delivery(body if isinstance(body, dict) else None, message)

        yield depth, stream()
        # Stop the broker pushing more before the rest is handed back.
        consumer.cancel()
    finally:
        _hand_back_in_order(channel)
        channel.close()


def _hand_back_in_order(channel: Any) -> None:
    """Return unremoved entries to their old places before the channel closes.

    RabbitMQ and the embedded broker do this by themselves. kombu's Redis transport pushes
    them back oldest first onto the end that is read next, which reverses them; pushing them
    newest first keeps the queue's order.
    """
    qos = getattr(channel, "qos", None)
    if qos is None or not hasattr(qos, "restore_by_tag"):
        return
    for tag in reversed(list(qos._delivered)):
        qos.restore_by_tag(tag)
    qos._delivered.clear()


def browse(connection: Connection) -> Iterator[dict[str, Any]]:
    """Every entry, oldest first, without consuming or reordering any."""
    with deliveries(connection) as (_, stream):
        for delivery in stream:
            if delivery.entry is not None:
                yield delivery.entry
