"""The Celery internals the event consumer relies on are still there, and still behave.

None of them is documented extension API (see ``worker.intake.celery_hooks``): when a Celery
upgrade renames or reshapes one, these tests say which, before any worker misbehaves.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from celery import Celery
from celery.worker.consumer import Consumer as CeleryConsumer
from celery.worker.consumer.tasks import Tasks as ConsumerTasks
from kombu import Connection, Message
from kombu.serialization import loads

from worker.intake.celery_hooks import CONSUMER_ATTRIBUTES, PoolHandOff, task_message


def _consumer_has(name: str) -> bool:
    if hasattr(CeleryConsumer, name):
        return True
    # Attributes set per instance show up only in the source that sets them: the constructor,
    # or the bootstep that starts the task consumer.
    return f"self.{name} =" in inspect.getsource(CeleryConsumer.__init__) or (
        f"c.{name} =" in inspect.getsource(ConsumerTasks.start)
    )


@pytest.mark.parametrize("name", CONSUMER_ATTRIBUTES)
def test_celerys_consumer_still_has(name: str) -> None:
    assert _consumer_has(name), f"celery.worker.consumer.Consumer has no {name} any more"


def _required(function: Any) -> list[str]:
    return [
        p.name
        for p in list(inspect.signature(function).parameters.values())[1:]  # after self
        if p.default is inspect.Parameter.empty
        and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]


def test_the_loop_side_calls_take_what_we_pass() -> None:
    # call_soon(function, *args), call_soon_ack(ack), create_task_handler()
    assert len(_required(CeleryConsumer.call_soon)) <= 1
    assert len(_required(CeleryConsumer.call_soon_ack)) == 1
    assert _required(CeleryConsumer.create_task_handler) == []


def test_as_task_v2_still_takes_the_options_we_pass() -> None:
    from celery.app.amqp import AMQP

    parameters = inspect.signature(AMQP.as_task_v2).parameters
    for name in ("task_id", "name", "args", "kwargs", "argsrepr", "kwargsrepr"):
        assert name in parameters, f"AMQP.as_task_v2 takes no {name} any more"


class _FakeConsumer:
    """What PoolHandOff.of reads, with the names Celery's consumer has."""

    initial_prefetch_count = 64

    def call_soon(self, *args: Any) -> None: ...

    def call_soon_ack(self, *args: Any) -> None: ...

    def create_task_handler(self) -> Any:
        return "handler"


def test_the_hand_off_reads_the_consumer_by_those_names() -> None:
    consumer = _FakeConsumer()
    hand_off = PoolHandOff.of(consumer)
    assert hand_off.handle_task == "handler"
    assert hand_off.prefetch == 64
    assert hand_off.call_soon == consumer.call_soon


def test_a_task_message_is_one_celery_reads_as_a_request_of_the_task() -> None:
    """Celery's own Request parses the message into the task, its arguments and options."""
    from celery.worker.request import Request

    app = Celery("hooks-test", set_as_current=False)

    @app.task(name="hooks.echo", shared=False)
    def echo(value: Any) -> Any:  # pragma: no cover (never run)
        return value

    with Connection("memory://") as connection:
        channel = connection.default_channel
        original = Message(
            body=b"{}", delivery_tag=7, channel=channel, content_type="application/json"
        )
        message = task_message(
            app,
            "hooks.echo",
            args=({"x": 1},),
            kwargs={"y": 2},
            delivered_as=original,
            argsrepr="(x)",
        )
        assert message.delivery_tag == 7 and message.channel is channel
        args, kwargs, _ = loads(
            message.body,
            message.content_type,
            message.content_encoding,
            accept=["application/json"],
        )
        assert (args, kwargs) == ([{"x": 1}], {"y": 2})
        request = Request(message, app=app, task=app.tasks["hooks.echo"])
        assert request.task_name == "hooks.echo"
        assert request.argsrepr == "(x)"
