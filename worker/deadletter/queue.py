"""The dead-letter queue: where workers put entries, durably. From there they are moved into
the database (``ingest``), where operators read and act on them."""

from __future__ import annotations

from typing import Any

from kombu import Producer

from worker.broker.connection import PERSISTENT, PUBLISH_RETRY_POLICY
from worker.broker.topology import DEAD_LETTER_EXCHANGE, DEAD_LETTER_QUEUE


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
