"""Retries that wait in the broker, not in a worker's memory (quorum queues on RabbitMQ).

With quorum queues Celery (5.5 and later) sends a task given a countdown through RabbitMQ's delay
queues (``celery_delayed_0`` ... ``celery_delayed_27``, one per power of two seconds, declared by
the worker at start): the message waits there and reaches ``order-sync.tasks`` when due, so a
worker holds no waiting retry, a restart loses none, and none outlives ``consumer_timeout`` in a
worker. Those delays are whole seconds, and Celery refuses a countdown under one second
(``calculate_routing_key`` raises): such a countdown waits one second instead.

Celery declares the delay queues and binds ours to them at every (re)connection, once per URL
of the broker setting, over a new connection each, retrying a node that does not answer for
about 17 s before it reads any queue. With a failover URL that lists every node of a cluster,
a lost node would so hold back every reconnection; ``OrderSyncConsumer`` does it once, on the
connection the worker has just made (to a node that answers).
"""

from __future__ import annotations

from typing import Any

from celery.worker.consumer import Consumer
from celery.worker.consumer.delayed_delivery import DelayedDelivery
from kombu.transport.native_delayed_delivery import (
    declare_native_delayed_delivery_exchanges_and_queues,
)

from worker.settings import QUORUM

#: The shortest wait the broker's delay queues can keep.
SHORTEST_BROKER_DELAY = 1.0


def broker_countdown(countdown: float | None) -> float | None:
    """The countdown a task is sent with when its wait is kept by the broker."""
    if countdown is not None and 0 < countdown < SHORTEST_BROKER_DELAY:
        return SHORTEST_BROKER_DELAY
    return countdown


class DelaysInBroker:
    """Mixed into the Celery app: with quorum queues (``task_default_queue_type``), a countdown
    under a second is sent as one second."""

    conf: Any

    def send_task(
        self, name: str, *args: Any, countdown: float | None = None, **options: Any
    ) -> Any:
        if self.conf.task_default_queue_type == QUORUM:
            countdown = broker_countdown(countdown)
        return super().send_task(name, *args, countdown=countdown, **options)  # type: ignore[misc]


class DelayedDeliveryOnce(DelayedDelivery):
    """Celery's step, on the consumer's own connection instead of one per URL."""

    def start(self, c: Any) -> None:
        app = c.app
        self._validate_configuration(app)  # type: ignore[attr-defined]
        declare_native_delayed_delivery_exchanges_and_queues(
            c.connection, app.conf.broker_native_delayed_delivery_queue_type
        )
        self._bind_queues(app, c.connection)  # type: ignore[attr-defined]


class OrderSyncConsumer(Consumer):
    """Celery's consumer with ``DelayedDeliveryOnce`` in place of its own step."""

    class Blueprint(Consumer.Blueprint):  # type: ignore[misc,valid-type]
        default_steps = [
            f"{__name__}:DelayedDeliveryOnce" if step.endswith(":DelayedDelivery") else step
            for step in Consumer.Blueprint.default_steps
        ]
