"""The event consumer hands each event to the pool as a task request delivered by the event's
own message (kombu's in-memory transport stands in for the broker)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kombu import Connection, Message, Producer
from kombu.serialization import loads

from worker.apply.tasks import APPLY_ORDER_EVENT
from worker.broker.topology import EVENTS_QUEUE
from worker.celery import app
from worker.coordination.orders import BULK
from worker.intake.consumer import EventConsumerStep

BODY = b'{"event_id": "e-1", "order_id": 5001}'


@pytest.fixture
def received() -> Iterator[tuple[Any, Message]]:
    """An events queue holding one event, and that event as the worker receives it."""
    with Connection("memory://") as connection:
        queue = EVENTS_QUEUE(connection.default_channel)
        queue.declare()
        queue.purge()
        Producer(connection.default_channel).publish(
            BODY,
            exchange=EVENTS_QUEUE.exchange,
            routing_key="order.changed",
            content_type="application/json",
            correlation_id="corr-1",
        )
        message = queue.get(no_ack=False)
        assert message is not None
        yield queue, message


def step_for_app() -> EventConsumerStep:
    step = EventConsumerStep(parent=None)
    step.app = app
    return step


def test_the_request_carries_the_event_as_received_for_the_named_task(
    received: tuple[Any, Message],
) -> None:
    _, message = received
    request = step_for_app().as_request(message, {"body": "x"}, BULK)
    assert request.headers["task"] == APPLY_ORDER_EVENT
    assert request.headers["kwargsrepr"] == "{'event_id': None}"
    args, kwargs, _embed = loads(
        request.body, request.content_type, request.content_encoding, accept=["application/json"]
    )
    assert args == [{"body": "x"}]
    assert kwargs == {"lane": BULK}
    assert request.delivery_tag == message.delivery_tag
    assert request.channel is message.channel


def test_acking_the_request_acks_the_event(received: tuple[Any, Message]) -> None:
    queue, message = received
    request = step_for_app().as_request(message, {"body": "x"}, None)
    request.ack()
    message.channel.basic_recover(requeue=True)  # anything still unacked comes back
    assert queue.get(no_ack=False) is None


def test_an_event_the_pool_refuses_goes_back_to_its_queue(received: tuple[Any, Message]) -> None:
    queue, message = received
    step = step_for_app()

    def broken(_request: Message) -> None:
        raise RuntimeError("a bug")

    step.pool.handle_task = broken
    step.hand_over(step.as_request(message, {"body": "x"}, None))
    again = queue.get(no_ack=False)
    assert again is not None and again.body == BODY
