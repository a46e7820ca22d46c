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
import uuid
from collections.abc import Iterator
from typing import Any

from kombu import Connection, Producer

from worker.topology import DEAD_LETTER_EXCHANGE, DEAD_LETTER_QUEUE

PERSISTENT = 2  # AMQP delivery mode: written to disk by the broker
PUBLISH_RETRY_POLICY = {"max_retries": 5, "interval_start": 0.2, "interval_step": 0.5}


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


def browse(connection: Connection) -> Iterator[dict[str, Any]]:
    """Every entry, oldest first, without consuming any.

    Messages are fetched unacknowledged on one channel; closing the channel hands them all back
    to the queue.
    """
    channel: Any = connection.channel()
    try:
        queue = DEAD_LETTER_QUEUE(channel)
        queue.declare()
        while True:
            message = queue.get(no_ack=False, accept=["json"])
            if message is None:
                return
            body = message.decode()
            if isinstance(body, dict):
                yield body
    finally:
        channel.close()
