"""Where the poller's events go: the events exchange, and the dead-letter queue for bad rows.

On AMQP a whole batch is published on one confirm-mode channel and the confirms are awaited
together: waiting for each confirm in turn costs a round trip per row and caps a drain at about
1,500 rows/s. Other transports (Redis, the embedded broker) have no confirms; a publish that
returns is as far as they go, so ``EventPublisher.publish_raw`` is used as is.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, cast

import amqp
from kombu import Connection, Producer

from worker.broker.connection import PERSISTENT, connect
from worker.broker.topology import (
    BULK_ROUTING_KEY,
    EVENT_ROUTING_KEY,
    EVENTS_EXCHANGE,
    PUBLISHER_QUEUES,
)
from worker.deadletter import queue as deadletter_queue
from worker.publisher import EventPublisher
from worker.settings import BrokerSettings

AMQP_SCHEMES = ("amqp", "amqps", "pyamqp")
#: How long a batch waits for the broker's confirms before its unconfirmed rest counts as failed.
CONFIRM_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class Outgoing:
    body: str
    event_id: str
    bulk: bool = False  # a catch-up: published with the bulk routing key


@dataclass
class BatchResult:
    """Which messages of a batch the broker has (their indexes), and why the rest failed."""

    confirmed: set[int] = field(default_factory=set)
    error: str | None = None


class EventSink:
    """``with EventSink(settings) as sink: sink.publish_batch(...)``; one connection per run."""

    def __init__(self, settings: BrokerSettings) -> None:
        self.settings = settings
        self.is_amqp = settings.url.split(":", 1)[0] in AMQP_SCHEMES
        self._batch_channel: _ConfirmChannel | None = None
        self._publisher: EventPublisher | None = None
        self._dead_letters: Connection | None = None

    def __enter__(self) -> EventSink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._batch_channel is not None:
            self._batch_channel.close()
            self._batch_channel = None
        if self._publisher is not None:
            self._publisher.__exit__(None, None, None)
            self._publisher = None
        if self._dead_letters is not None:
            self._dead_letters.release()
            self._dead_letters = None

    def publish_batch(self, messages: Sequence[Outgoing]) -> BatchResult:
        """Publish in order; a failure leaves the rest of the batch unconfirmed."""
        if not messages:
            return BatchResult()
        try:
            if self.is_amqp:
                if self._batch_channel is None:
                    self._batch_channel = _ConfirmChannel(self.settings.url)
                result = self._batch_channel.publish(messages)
                if result.error is not None:
                    self.close()  # a failed channel is not reused: its tags are out of step
                return result
            return self._publish_one_by_one(messages)
        except Exception as exc:
            # The connection is in an unknown state; the next batch starts a new one.
            self.close()
            return BatchResult(error=_describe(exc))

    def _publish_one_by_one(self, messages: Sequence[Outgoing]) -> BatchResult:
        if self._publisher is None:
            self._publisher = EventPublisher(self.settings).__enter__()
        result = BatchResult()
        for index, message in enumerate(messages):
            try:
                self._publisher.publish_raw(message.body, message.event_id, bulk=message.bulk)
            except Exception as exc:
                self.close()
                result.error = _describe(exc)
                break
            result.confirmed.add(index)
        return result

    def dead_letter(self, entry: dict[str, Any]) -> None:
        """Store an entry (confirmed on AMQP); raises if the broker cannot take it."""
        if self._dead_letters is None:
            self._dead_letters = connect(self.settings)
        deadletter_queue.publish(Producer(self._dead_letters), entry)


class _ConfirmChannel:
    """A plain AMQP channel in confirm mode, whose confirms are awaited per batch."""

    def __init__(self, url: str) -> None:
        # No ``confirm_publish`` transport option: it would wait for every message in turn.
        self.connection = Connection(url, transport_options={})
        self.connection.ensure_connection(max_retries=1)
        # kombu types it as its abstract channel; on pyamqp it is an amqp.Channel.
        self.channel: Any = cast(Any, self.connection.channel())
        for queue in PUBLISHER_QUEUES:
            queue(self.channel).declare()
        self.channel.confirm_select()
        self.channel.events["basic_ack"].add(self._on_ack)
        self.channel.events["basic_nack"].add(self._on_nack)
        self._published = 0  # delivery tags count from 1 on a channel in confirm mode
        self._unanswered: set[int] = set()
        self._nacked: set[int] = set()

    def _answer(self, tag: int, multiple: bool) -> set[int]:
        answered = {t for t in self._unanswered if t <= tag} if multiple else {tag}
        self._unanswered -= answered
        return answered

    def _on_ack(self, tag: int, multiple: bool) -> None:
        self._answer(tag, multiple)

    def _on_nack(self, tag: int, multiple: bool) -> None:
        self._nacked |= self._answer(tag, multiple)

    def publish(self, messages: Sequence[Outgoing]) -> BatchResult:
        first = self._published + 1
        self._nacked.clear()
        result = BatchResult()
        try:
            for message in messages:
                self._unanswered.add(self._published + 1)
                self.channel.basic_publish(
                    amqp.Message(
                        message.body,
                        content_type="application/json",
                        content_encoding="utf-8",
                        delivery_mode=PERSISTENT,
                        message_id=message.event_id,
                    ),
                    exchange=EVENTS_EXCHANGE.name,
                    routing_key=BULK_ROUTING_KEY if message.bulk else EVENT_ROUTING_KEY,
                )
                self._published += 1
            self._await_answers()
        except Exception as exc:
            result.error = _describe(exc)
        for index in range(self._published - first + 1):
            tag = first + index
            if tag not in self._unanswered and tag not in self._nacked:
                result.confirmed.add(index)
        if result.error is None and self._nacked:
            result.error = f"the broker refused {len(self._nacked)} message(s) (basic.nack)"
        return result

    def _await_answers(self) -> None:
        deadline = time.monotonic() + CONFIRM_TIMEOUT_SECONDS
        while self._unanswered:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no broker confirm within {CONFIRM_TIMEOUT_SECONDS:g}s")
            self.connection.drain_events(timeout=remaining)

    def close(self) -> None:
        # Releasing a connection the broker already dropped may fail; there is nothing to undo.
        with contextlib.suppress(Exception):
            self.connection.release()


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
