"""The few Celery internals the event consumer relies on, in one place.

Celery has no documented way for a consumer step to run a message from another queue as a task.
What it does for its own task queue is what we use: ``Consumer.create_task_handler`` (reserve a
request and run it in the pool), ``Consumer.call_soon`` / ``call_soon_ack`` (run a call on the
consumer's event loop from another thread), ``Consumer.initial_prefetch_count``,
``Consumer.task_consumer`` (to stop and resume reading the task queue while the fleet is
paused) and ``app.amqp.as_task_v2`` (a task message in Celery's protocol 2). None of these
is documented extension API, so ``tests/unit/test_celery_hooks.py`` checks each of them against
the installed Celery and fails loudly when an upgrade changes one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kombu import Message
from kombu.serialization import dumps
from kombu.utils.uuid import uuid

#: What the event consumer uses of Celery's worker consumer (``celery.worker.consumer``).
CONSUMER_ATTRIBUTES = (
    "create_task_handler",
    "call_soon",
    "call_soon_ack",
    "initial_prefetch_count",
    "task_consumer",
)


def _run_now(function: Callable[..., Any], *args: Any) -> Any:
    return function(*args)


@dataclass
class PoolHandOff:
    """How events reach the worker's pool: the loop-side calls of Celery's consumer."""

    # Thread-safe: runs the call on the consumer's event loop.
    call_soon: Callable[..., Any] = _run_now
    call_soon_ack: Callable[..., Any] = _run_now
    # Reserves a request and runs it in the pool, acking or rejecting its message as the
    # task's settings say. Not thread-safe: called on the event loop only.
    handle_task: Callable[[Message], Any] = lambda request: None
    # How many messages Celery lets the worker hold for its own task queue.
    prefetch: int = 0
    # Celery's worker consumer, whose ``task_consumer`` reads the task queue.
    celery_consumer: Any = None

    @property
    def task_consumer(self) -> Any:
        """Celery's kombu Consumer of the task queue (a new one after each reconnect)."""
        return getattr(self.celery_consumer, "task_consumer", None)

    @classmethod
    def of(cls, consumer: Any) -> PoolHandOff:
        return cls(
            call_soon=consumer.call_soon,
            call_soon_ack=consumer.call_soon_ack,
            handle_task=consumer.create_task_handler(),
            prefetch=int(consumer.initial_prefetch_count or 0),
            celery_consumer=consumer,
        )


def task_message(
    app: Any,
    task_name: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    delivered_as: Message,
    **options: Any,
) -> Message:
    """A message of ``task_name`` delivered as ``delivered_as``: acking or rejecting the one
    acks or rejects the other, so the original message stays unacked until the task ends."""
    task = app.amqp.as_task_v2(uuid(), task_name, args=args, kwargs=kwargs, **options)
    content_type, encoding, body = dumps(task.body, serializer="json")
    return Message(
        body=body,
        delivery_tag=delivered_as.delivery_tag,
        content_type=content_type,
        content_encoding=encoding,
        delivery_info=delivered_as.delivery_info,
        properties=task.properties,
        headers=task.headers,
        accept=["application/json"],
        channel=delivered_as.channel,
    )
