"""Names and declarations of everything this project keeps on the broker.

All of it is durable and declared both by the worker at start and by the publisher, so events
published before any worker ever ran are kept. The names are part of the contract with upstream
publishers and operators: change them only with a migration plan.

On RabbitMQ every queue of ours has the type ``ORDER_SYNC_QUEUE_TYPE`` names (``classic``, the
default, or ``quorum``): the declarations below follow it, so every process declares the queues
with the same arguments (RabbitMQ refuses a declaration whose arguments differ from the queue's).
A queue cannot change type in place; ``order-sync queues migrate`` moves a deployment over.

Quorum queues are replicated over the nodes of a cluster and survive the loss of a minority of
them. Ours count deliveries: an event or task handed out ``QUORUM_DELIVERY_LIMIT`` times without
being acknowledged (a message that crashes every worker that takes it, say) is dead-lettered by
the broker itself into ``order-sync.dead-letters``, raw, with an ``x-death`` header saying why
(``delivery_limit``), never dropped. The task exchange is a topic exchange there, as Celery's
native delayed delivery needs: a retry's countdown is spent in the broker's delay queues.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kombu import Exchange, Queue

from worker.settings import CLASSIC, QUORUM, queue_type

#: Upstream systems publish here (topic exchange, routing key ``order.changed``).
EVENTS_EXCHANGE = Exchange("order-events", type="topic", durable=True)
EVENT_ROUTING_KEY = "order.changed"
#: Bulk events (re-syncs, replays, catch-ups) are published with this routing key and wait in a
#: queue of their own, so a live change never waits behind a bulk backlog in the broker.
BULK_ROUTING_KEY = "order.changed.bulk"
TASKS_ROUTING_KEY = "order-sync.tasks"
DEAD_LETTER_EXCHANGE = Exchange("order-sync.dead-letters", type="direct", durable=True)
DEAD_LETTER_ROUTING_KEY = "order-sync.dead-letters"

#: Deliveries of one message a quorum queue of ours allows before it dead-letters the message
#: (RabbitMQ 3.x has no limit unless told, 4.x a default of 20; ours is explicit). Each worker
#: crash, lost connection or node failover while a message is held counts one delivery, so the
#: limit is far above what a healthy message meets, and stops a poison message soon.
QUORUM_DELIVERY_LIMIT = 20


def queue_arguments(kind: str, *, dead_letters: bool = False) -> dict[str, Any] | None:
    """The arguments each of our queues of type ``kind`` is declared with.

    Classic queues have none (as they always had). A quorum queue names its type; the work
    queues also dead-letter at the delivery limit, at least once (RabbitMQ keeps such a message
    until the dead-letter queue has it, which needs ``x-overflow: reject-publish``). The
    dead-letter queue itself has no limit: reading it (``order-sync dlq list``) hands every entry
    back, and no entry may ever leave it but by an operator's hand.
    """
    if kind == CLASSIC:
        return None
    if kind != QUORUM:
        raise ValueError(f"unknown queue type {kind!r}")
    if dead_letters:
        return {"x-queue-type": QUORUM}
    return {
        "x-queue-type": QUORUM,
        "x-delivery-limit": QUORUM_DELIVERY_LIMIT,
        "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE.name,
        "x-dead-letter-routing-key": DEAD_LETTER_ROUTING_KEY,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


def tasks_exchange(kind: str) -> Exchange:
    """Direct for classic queues (as it always was); topic for quorum queues, because Celery's
    native delayed delivery routes a retry back through it with a longer routing key."""
    return Exchange("order-sync.tasks", type="topic" if kind == QUORUM else "direct", durable=True)


@dataclass(frozen=True)
class Topology:
    """Our queues and the task exchange, as declared for one queue type."""

    queue_type: str
    events: Queue
    events_bulk: Queue
    tasks_exchange: Exchange
    tasks: Queue
    dead_letters: Queue

    @property
    def event_queues(self) -> tuple[Queue, Queue]:
        return (self.events, self.events_bulk)

    @property
    def queues(self) -> tuple[Queue, ...]:
        """Every queue of ours, the dead-letter queue last."""
        return (self.events, self.events_bulk, self.tasks, self.dead_letters)


def topology(kind: str) -> Topology:
    """Every queue of ours (and the task exchange) for queue type ``kind``."""
    work = queue_arguments(kind)
    exchange = tasks_exchange(kind)
    return Topology(
        queue_type=kind,
        events=Queue(
            "order-sync.events",
            exchange=EVENTS_EXCHANGE,
            routing_key=EVENT_ROUTING_KEY,
            durable=True,
            queue_arguments=work,
        ),
        events_bulk=Queue(
            "order-sync.events.bulk",
            exchange=EVENTS_EXCHANGE,
            routing_key=BULK_ROUTING_KEY,
            durable=True,
            queue_arguments=work,
        ),
        tasks_exchange=exchange,
        tasks=Queue(
            "order-sync.tasks",
            exchange=exchange,
            routing_key=TASKS_ROUTING_KEY,
            durable=True,
            queue_arguments=work,
        ),
        dead_letters=Queue(
            "order-sync.dead-letters",
            exchange=DEAD_LETTER_EXCHANGE,
            routing_key=DEAD_LETTER_ROUTING_KEY,
            durable=True,
            queue_arguments=queue_arguments(kind, dead_letters=True),
        ),
    )


#: The declarations of this process, for the queue type its environment names.
CONFIGURED = topology(queue_type(strict=False))
QUEUE_TYPE = CONFIGURED.queue_type

#: Plain JSON events wait here for the worker's event consumer.
EVENTS_QUEUE = CONFIGURED.events
EVENTS_BULK_QUEUE = CONFIGURED.events_bulk
#: Both queues of upstream events, live first.
EVENT_QUEUES = CONFIGURED.event_queues

#: Celery task messages for the worker pool: retries, and tasks queued by other means.
TASKS_EXCHANGE = CONFIGURED.tasks_exchange
TASKS_QUEUE = CONFIGURED.tasks

#: Events that cannot succeed, each wrapped in an entry saying why.
DEAD_LETTER_QUEUE = CONFIGURED.dead_letters

PUBLISHER_QUEUES = (*EVENT_QUEUES, DEAD_LETTER_QUEUE)
