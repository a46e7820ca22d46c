"""Publishing order-change events, for Python upstreams and for ``order-sync publish``.

Every event is validated against the contract before anything is sent, and each publish waits for
the broker's confirm (on AMQP), so "published" means the broker has it. Events go to the durable
topic exchange ``order-events`` with routing key ``order.changed``, as persistent
``application/json`` messages: exactly what a publisher in any other language sends.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

from kombu import Connection, Producer
from marshmallow import ValidationError

from schemas.errors import describe_errors
from schemas.event import load_event
from worker.broker.connection import PERSISTENT, PUBLISH_RETRY_POLICY, connect
from worker.broker.topology import (
    BULK_ROUTING_KEY,
    EVENT_ROUTING_KEY,
    EVENTS_EXCHANGE,
    PUBLISHER_QUEUES,
)
from worker.settings import BrokerSettings, broker_settings


class InvalidEvents(ValueError):
    """Some events break the contract; nothing was published. ``problems`` lists each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(f"{len(problems)} invalid event(s); nothing published: " + problems[0])
        self.problems = problems


def validate_events(events: Iterable[tuple[str, Any]]) -> list[str]:
    """Problems with (label, event) pairs, one line each: ``label: field.path: message``."""
    problems = []
    for label, event in events:
        try:
            load_event(event)
        except ValidationError as exc:
            problems.append(f"{label}: {describe_errors(exc.messages)}")
    return problems


class EventPublisher:
    """``with EventPublisher() as publisher: publisher.publish(event)``."""

    def __init__(self, settings: BrokerSettings | None = None) -> None:
        self.connection: Connection = connect(settings or broker_settings())
        self.producer: Producer | None = None

    def __enter__(self) -> EventPublisher:
        self.producer = Producer(self.connection)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.connection.release()

    def publish(self, event: Mapping[str, Any], *, bulk: bool = False) -> None:
        """Validate and publish one event; raises InvalidEvents if it breaks the contract.
        ``bulk``: a re-sync, replay or catch-up, which live changes go before."""
        problems = validate_events([("event", event)])
        if problems:
            raise InvalidEvents(problems)
        body = json.dumps(event, separators=(",", ":"))
        self.publish_raw(body, str(event.get("event_id")), bulk=bulk)

    def publish_raw(
        self,
        body: str | bytes,
        message_id: str | None = None,
        *,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
        bulk: bool = False,
    ) -> None:
        """Publish a body as is (no validation), as a non-Python upstream would."""
        if self.producer is None:
            raise RuntimeError("use EventPublisher as a context manager")
        self.producer.publish(
            body,
            exchange=EVENTS_EXCHANGE,
            routing_key=BULK_ROUTING_KEY if bulk else EVENT_ROUTING_KEY,
            declare=list(PUBLISHER_QUEUES),
            content_type=content_type,
            content_encoding="binary" if isinstance(body, bytes) else "utf-8",
            headers=headers,
            delivery_mode=PERSISTENT,
            message_id=message_id,
            retry=True,
            retry_policy=PUBLISH_RETRY_POLICY,
        )


def publish_events(
    events: Iterable[Mapping[str, Any]],
    settings: BrokerSettings | None = None,
    *,
    bulk: bool = False,
) -> int:
    """Validate every event, then publish them all (``bulk``: as bulk events, which live
    changes go before); returns how many were published.

    Raises InvalidEvents (publishing nothing) if any event breaks the contract.
    """
    batch = list(events)
    problems = validate_events((f"event {i}", e) for i, e in enumerate(batch, start=1))
    if problems:
        raise InvalidEvents(problems)
    with EventPublisher(settings) as publisher:
        for event in batch:
            body = json.dumps(event, separators=(",", ":"))
            publisher.publish_raw(body, str(event["event_id"]), bulk=bulk)
    return len(batch)
