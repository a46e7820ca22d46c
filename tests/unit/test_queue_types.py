"""ORDER_SYNC_QUEUE_TYPE: how it is read, and what each queue type declares."""

from __future__ import annotations

import pytest

from worker.broker.connection import mismatch_message
from worker.broker.delayed import SHORTEST_BROKER_DELAY, broker_countdown
from worker.broker.topology import QUORUM_DELIVERY_LIMIT, topology
from worker.settings import CLASSIC, QUORUM, ConfigError, broker_settings, queue_type

AMQP = "amqp://guest:guest@127.0.0.1:5672//"


def test_classic_by_default_and_quorum_when_asked() -> None:
    assert queue_type({}) == CLASSIC
    assert broker_settings({"CELERY_BROKER_URL": AMQP}).queue_type == CLASSIC
    settings = broker_settings({"CELERY_BROKER_URL": AMQP, "ORDER_SYNC_QUEUE_TYPE": " Quorum "})
    assert settings.queue_type == QUORUM


def test_an_unknown_type_is_named_and_a_lenient_read_falls_back() -> None:
    with pytest.raises(ConfigError, match="ORDER_SYNC_QUEUE_TYPE must be one of classic, quorum"):
        broker_settings({"CELERY_BROKER_URL": AMQP, "ORDER_SYNC_QUEUE_TYPE": "quorom"})
    assert queue_type({"ORDER_SYNC_QUEUE_TYPE": "quorom"}, strict=False) == CLASSIC


def test_quorum_needs_rabbitmq() -> None:
    for url in ("redis://127.0.0.1:6379/0", ""):
        with pytest.raises(ConfigError, match="needs RabbitMQ"):
            broker_settings({"CELERY_BROKER_URL": url, "ORDER_SYNC_QUEUE_TYPE": QUORUM})


def test_classic_declarations_are_unchanged() -> None:
    classic = topology(CLASSIC)
    assert all(queue.queue_arguments is None for queue in classic.queues)
    assert classic.tasks_exchange.type == "direct"


def test_quorum_work_queues_dead_letter_at_their_limit_and_the_dead_letters_have_none() -> None:
    quorum = topology(QUORUM)
    for queue in (quorum.events, quorum.events_bulk, quorum.tasks):
        arguments = queue.queue_arguments or {}
        assert arguments["x-queue-type"] == QUORUM
        assert arguments["x-delivery-limit"] == QUORUM_DELIVERY_LIMIT
        assert arguments["x-dead-letter-exchange"] == quorum.dead_letters.exchange.name
        assert arguments["x-dead-letter-routing-key"] == quorum.dead_letters.routing_key
        assert arguments["x-dead-letter-strategy"] == "at-least-once"
        assert arguments["x-overflow"] == "reject-publish"
    assert quorum.dead_letters.queue_arguments == {"x-queue-type": QUORUM}
    # Celery's native delayed delivery routes only through topic exchanges.
    assert quorum.tasks_exchange.type == "topic"
    assert quorum.tasks.exchange.type == "topic"


@pytest.mark.parametrize(
    ("countdown", "sent"),
    [(None, None), (0, 0), (0.05, SHORTEST_BROKER_DELAY), (0.999, 1.0), (1.0, 1.0), (7.5, 7.5)],
)
def test_a_countdown_under_a_second_waits_a_second(
    countdown: float | None, sent: float | None
) -> None:
    assert broker_countdown(countdown) == sent


def test_the_mismatch_message_names_the_setting_and_the_command() -> None:
    message = mismatch_message(["order-sync.events is classic"], topology(QUORUM))
    assert "ORDER_SYNC_QUEUE_TYPE=quorum" in message
    assert "order-sync.events is classic" in message
    assert "order-sync queues migrate --to quorum" in message
    assert "ORDER_SYNC_QUEUE_TYPE=classic" in message
