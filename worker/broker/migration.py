"""Moving our queues to another type (classic to quorum, or back) without losing a message.

A queue's type and arguments cannot change in place, so each queue ``Q`` is rebuilt around a
temporary queue ``Q.migrating`` of the new type, always with at least one of the two bound to
``Q``'s exchange, so an event published meanwhile is never unroutable:

1. declare ``Q.migrating`` and bind it as ``Q`` is bound; unbind ``Q``;
2. move every message of ``Q`` to ``Q.migrating``; delete ``Q`` (only when empty);
3. for the task queue, declare the task exchange anew (direct for classic, topic for quorum);
4. declare ``Q`` with the new type and arguments, bind it; unbind ``Q.migrating``;
5. move every message back to ``Q``; delete ``Q.migrating`` (only when empty).

A message is acknowledged in its old queue only after the broker confirmed its copy in the new
one: a migration cut short (a crash, a lost connection) loses nothing and is resumed by running
it again, at worst with some messages stored twice (the workers apply an ``event_id`` once).
For the same reason an event published in the instant between a bind and an unbind may be
stored in both queues. Workers must be stopped: the migration refuses to start while any queue
of ours has a consumer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import amqp
import amqp.exceptions
from kombu import Connection, Exchange, Queue

from worker.broker.connection import PERSISTENT, existing_queue_type
from worker.broker.topology import TASKS_ROUTING_KEY, Topology, topology
from worker.settings import QUEUE_TYPES

TEMPORARY_SUFFIX = ".migrating"
#: Messages moved per confirmed batch.
BATCH = 500
CONFIRM_TIMEOUT_SECONDS = 60.0
#: Celery's native delayed delivery hands due retries to this exchange (kombu's name for it).
DELAYED_DELIVERY_EXCHANGE = "celery_delayed_delivery"
# Set by the broker on each delivery from a quorum queue; not part of the message.
BROKER_HEADERS = ("x-delivery-count",)


class MigrationRefused(Exception):
    """The migration cannot start (workers still consuming, a broker without the queue type)."""


@dataclass
class QueueMigration:
    """What happened to one queue: its type before, and the messages moved each way."""

    name: str
    type_before: str | None
    type_after: str
    moved_out: int = 0
    moved_back: int = 0
    skipped: bool = False  # already of the target type, with the target arguments

    def as_dict(self) -> dict[str, Any]:
        return {
            "queue": self.name,
            "type_before": self.type_before,
            "type_after": self.type_after,
            "moved_out": self.moved_out,
            "moved_back": self.moved_back,
            "skipped": self.skipped,
        }


@dataclass
class QueueState:
    """One queue as the broker holds it now."""

    name: str
    type: str | None  # None: the queue does not exist
    messages: int = 0  # ready (not held unacknowledged by a consumer)
    consumers: int = 0
    temporary: int | None = None  # messages in its temporary queue, if one exists

    def as_dict(self) -> dict[str, Any]:
        return {
            "queue": self.name,
            "type": self.type,
            "messages": self.messages,
            "consumers": self.consumers,
            "migrating": self.temporary,
        }


Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


def temporary_name(name: str) -> str:
    return name + TEMPORARY_SUFFIX


def _declared_counts(connection: Connection, name: str) -> tuple[int, int] | None:
    channel: Any = connection.channel()
    try:
        declared: Any = Queue(name, durable=True)(channel).queue_declare(passive=True)
        return int(declared.message_count), int(declared.consumer_count)
    except amqp.exceptions.NotFound:
        return None
    finally:
        _close(channel)


def _close(channel: Any) -> None:
    try:
        channel.close()
    except Exception:  # closed already by the broker (a refused declaration)
        return


def queue_states(connection: Connection, wanted: Topology) -> list[QueueState]:
    """Each queue of ours: its type, messages and consumers, and any temporary queue."""
    states = []
    for queue in wanted.queues:
        kind = existing_queue_type(connection, queue.name)
        counts = _declared_counts(connection, queue.name) if kind else None
        temporary = _declared_counts(connection, temporary_name(queue.name))
        states.append(
            QueueState(
                name=queue.name,
                type=kind,
                messages=counts[0] if counts else 0,
                consumers=counts[1] if counts else 0,
                temporary=temporary[0] if temporary else None,
            )
        )
    return states


def _bindings(queue: Queue) -> list[tuple[str, str]]:
    """(exchange, routing key) of each binding of ours that ``queue`` has.

    The task queue also has the binding Celery's native delayed delivery adds (``#.`` before
    its routing key) on a topic exchange; unbinding one a queue lacks is harmless.
    """
    exchange: Exchange = queue.exchange
    found = [(exchange.name, str(queue.routing_key))]
    if queue.routing_key == TASKS_ROUTING_KEY:
        found.append((exchange.name, f"#.{TASKS_ROUTING_KEY}"))
    return found


class Mover:
    """Moves messages between queues of one broker, a confirmed batch at a time."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        # kombu types them as its abstract channel; on pyamqp they are amqp.Channel objects.
        self.channel: Any = cast(Any, connection.channel())  # declarations, bindings, reading
        self.publisher: Any = cast(Any, connection.channel())
        self.publisher.confirm_select()
        self.publisher.events["basic_ack"].add(self._on_ack)
        self.publisher.events["basic_nack"].add(self._on_nack)
        self._published = 0
        self._unanswered: set[int] = set()
        self._nacked = 0

    def _answer(self, tag: int, multiple: bool) -> int:
        answered = {t for t in self._unanswered if t <= tag} if multiple else {tag}
        self._unanswered -= answered
        return len(answered)

    def _on_ack(self, tag: int, multiple: bool) -> None:
        self._answer(tag, multiple)

    def _on_nack(self, tag: int, multiple: bool) -> None:
        self._nacked += self._answer(tag, multiple)

    def close(self) -> None:
        _close(self.publisher)
        _close(self.channel)

    def declare(self, queue: Queue) -> None:
        queue(self.channel).declare()

    def exchange_exists(self, name: str) -> bool:
        channel: Any = self.connection.channel()
        try:
            channel.exchange_declare(name, "topic", passive=True)
            return True
        except amqp.exceptions.NotFound:
            return False
        finally:
            _close(channel)

    def bind(self, queue: str, exchange: str, routing_key: str) -> None:
        self.channel.queue_bind(queue=queue, exchange=exchange, routing_key=routing_key)

    def unbind(self, queue: str, exchange: str, routing_key: str) -> None:
        try:
            self.channel.queue_unbind(queue=queue, exchange=exchange, routing_key=routing_key)
        except amqp.exceptions.NotFound:  # the exchange is gone: no binding left either
            self.channel = self.connection.channel()

    def delete_if_empty(self, name: str) -> bool:
        """Delete queue ``name`` if it holds nothing; False if a message arrived meanwhile.

        Quorum queues refuse ``if-empty``; nothing can reach an unbound queue with no consumer
        but a publish naming it, which only this migration does, so an empty count suffices.
        """
        counts = _declared_counts(self.connection, name)
        if counts is None:
            return True
        if counts[0]:
            return False
        deleted = self.channel.queue_delete(queue=name)
        if deleted:
            raise RuntimeError(f"{deleted} message(s) reached {name} while it was being deleted")
        return True

    def move(self, source: str, destination: str) -> int:
        """Move every message of ``source`` to ``destination``; returns how many."""
        moved = 0
        while True:
            batch: list[amqp.Message] = []
            while len(batch) < BATCH:
                message = self.channel.basic_get(queue=source, no_ack=False)
                if message is None:
                    break
                batch.append(message)
            if not batch:
                return moved
            for message in batch:
                properties = dict(message.properties)
                headers = dict(properties.get("application_headers") or {})
                for name in BROKER_HEADERS:
                    headers.pop(name, None)
                properties["application_headers"] = headers
                properties.setdefault("delivery_mode", PERSISTENT)
                self._published += 1
                self._unanswered.add(self._published)
                self.publisher.basic_publish(
                    amqp.Message(message.body, **properties), exchange="", routing_key=destination
                )
            self._await_confirms()
            # Only now, with every copy stored, the originals go.
            self.channel.basic_ack(batch[-1].delivery_tag, multiple=True)
            moved += len(batch)

    def _await_confirms(self) -> None:
        deadline = time.monotonic() + CONFIRM_TIMEOUT_SECONDS
        while self._unanswered:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no broker confirm within {CONFIRM_TIMEOUT_SECONDS:g} s")
            self.connection.drain_events(timeout=remaining)
        if self._nacked:
            raise RuntimeError(f"the broker refused {self._nacked} message(s); nothing acked")


def _refuse_if_consumed(connection: Connection, wanted: Topology) -> None:
    busy = [
        f"{state.name} ({state.consumers})"
        for state in queue_states(connection, wanted)
        if state.consumers
    ]
    if busy:
        raise MigrationRefused(
            "queues still have consumers: " + ", ".join(busy) + "; stop every worker first"
        )


def _in_place(connection: Connection, queue: Queue) -> bool:
    """Whether ``queue`` exists already exactly as it would be declared."""
    channel: Any = connection.channel()
    try:
        Queue(queue.name, durable=True)(channel).queue_declare(passive=True)
    except amqp.exceptions.NotFound:
        return False
    finally:
        _close(channel)
    channel = connection.channel()
    try:
        queue(channel).declare()
        return True
    except amqp.exceptions.PreconditionFailed:
        return False
    finally:
        _close(channel)


def migrate_queue(
    mover: Mover, wanted: Topology, queue: Queue, progress: Progress = _quiet
) -> QueueMigration:
    connection = mover.connection
    before = existing_queue_type(connection, queue.name)
    resuming = _declared_counts(connection, temporary_name(queue.name)) is not None
    report = QueueMigration(queue.name, before, wanted.queue_type)
    if not resuming and _in_place(connection, queue):
        report.skipped = True
        progress(f"{queue.name}: already {wanted.queue_type}")
        return report
    plan = _Plan(
        mover,
        wanted,
        queue,
        is_tasks=queue.name == wanted.tasks.name,
        delayed=mover.exchange_exists(DELAYED_DELIVERY_EXCHANGE),
    )
    plan.take_over(report, progress)
    if plan.is_tasks:
        plan.retype_task_exchange()
    plan.give_back(report, progress)
    return report


@dataclass
class _Plan:
    """The steps of one queue's migration (see the module's description)."""

    mover: Mover
    wanted: Topology
    queue: Queue
    is_tasks: bool
    delayed: bool  # Celery's delay queues exist: due retries must keep a way in

    @property
    def temporary(self) -> str:
        return temporary_name(self.queue.name)

    @property
    def bindings(self) -> list[tuple[str, str]]:
        return _bindings(self.queue)

    def _bind_all(self, queue: str, bind: bool) -> None:
        step = self.mover.bind if bind else self.mover.unbind
        for exchange_name, key in self.bindings:
            step(queue, exchange_name, key)
        if self.is_tasks and self.delayed:
            step(queue, DELAYED_DELIVERY_EXCHANGE, f"#.{TASKS_ROUTING_KEY}")

    def take_over(self, report: QueueMigration, progress: Progress) -> None:
        """1-2: the temporary queue takes the old one's place, and its messages."""
        if not self.mover.exchange_exists(self.bindings[0][0]):
            self.queue.exchange(self.mover.channel).declare()
        self.mover.declare(
            Queue(self.temporary, durable=True, queue_arguments=_plain(self.wanted.queue_type))
        )
        self._bind_all(self.temporary, bind=True)
        if report.type_before is None:
            return
        self._bind_all(self.queue.name, bind=False)
        while True:
            report.moved_out += self.mover.move(self.queue.name, self.temporary)
            if self.mover.delete_if_empty(self.queue.name):
                break
        progress(f"{self.queue.name}: {report.moved_out} message(s) moved to {self.temporary}")

    def retype_task_exchange(self) -> None:
        """3: the task exchange of the type the queue type needs (no message waits in it)."""
        exchange = self.wanted.tasks_exchange
        try:
            exchange(self.mover.channel).declare()
        except amqp.exceptions.PreconditionFailed:
            self.mover.channel = self.mover.connection.channel()
            self.mover.channel.exchange_delete(exchange.name)
            exchange(self.mover.channel).declare()
        self._bind_all(self.temporary, bind=True)

    def give_back(self, report: QueueMigration, progress: Progress) -> None:
        """4-5: the queue anew in the temporary queue's place, and every message back."""
        self.mover.declare(self.queue)
        topic = not self.is_tasks or self.wanted.tasks_exchange.type == "topic"
        for exchange_name, key in self.bindings if topic else self.bindings[:1]:
            self.mover.bind(self.queue.name, exchange_name, key)
        if self.is_tasks and self.delayed and topic:
            # As the worker's native delayed delivery binds it: due retries reach the exchange.
            self.mover.channel.exchange_bind(
                destination=self.wanted.tasks_exchange.name,
                source=DELAYED_DELIVERY_EXCHANGE,
                routing_key=f"#.{TASKS_ROUTING_KEY}",
            )
        elif self.is_tasks and self.delayed:
            # A direct exchange cannot route the delay queues' longer keys: bind the queue
            # itself, so retries still waiting there arrive after a move back to classic.
            self.mover.bind(self.queue.name, DELAYED_DELIVERY_EXCHANGE, f"#.{TASKS_ROUTING_KEY}")
        self._bind_all(self.temporary, bind=False)
        while True:
            report.moved_back += self.mover.move(self.temporary, self.queue.name)
            if self.mover.delete_if_empty(self.temporary):
                break
        progress(
            f"{self.queue.name}: {self.wanted.queue_type}, "
            f"{report.moved_back} message(s) moved back"
        )


def _plain(kind: str) -> dict[str, Any] | None:
    """The temporary queue's arguments: the type only (no delivery limit: moves never count)."""
    return {"x-queue-type": kind}


def migrate(connection: Connection, to: str, progress: Progress = _quiet) -> list[QueueMigration]:
    """Move every queue of ours to type ``to``; refuses while workers consume."""
    if to not in QUEUE_TYPES:
        raise MigrationRefused(f"unknown queue type {to!r}; one of {', '.join(QUEUE_TYPES)}")
    wanted = topology(to)
    _refuse_if_consumed(connection, wanted)
    mover = Mover(connection)
    try:
        return [migrate_queue(mover, wanted, queue, progress) for queue in wanted.queues]
    finally:
        mover.close()
