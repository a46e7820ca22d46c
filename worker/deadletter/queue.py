"""The dead-letter queue: entries stored durably, and read back without losing or reordering."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from kombu import Connection, Consumer, Message, Producer

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
