"""Names and declarations of everything this project keeps on the broker.

All of it is durable and declared both by the worker at start and by the publisher, so events
published before any worker ever ran are kept. The names are part of the contract with upstream
publishers and operators: change them only with a migration plan.
"""

from __future__ import annotations

from kombu import Exchange, Queue

#: Upstream systems publish here (topic exchange, routing key ``order.changed``).
EVENTS_EXCHANGE = Exchange("order-events", type="topic", durable=True)
EVENT_ROUTING_KEY = "order.changed"
#: Plain JSON events wait here for the worker's event consumer.
EVENTS_QUEUE = Queue(
    "order-sync.events", exchange=EVENTS_EXCHANGE, routing_key=EVENT_ROUTING_KEY, durable=True
)
#: Bulk events (re-syncs, replays, catch-ups) are published with this routing key and wait in a
#: queue of their own, so a live change never waits behind a bulk backlog in the broker.
BULK_ROUTING_KEY = "order.changed.bulk"
EVENTS_BULK_QUEUE = Queue(
    "order-sync.events.bulk",
    exchange=EVENTS_EXCHANGE,
    routing_key=BULK_ROUTING_KEY,
    durable=True,
)
#: Both queues of upstream events, live first.
EVENT_QUEUES = (EVENTS_QUEUE, EVENTS_BULK_QUEUE)

#: Celery task messages for the worker pool: retries, and tasks queued by other means.
TASKS_EXCHANGE = Exchange("order-sync.tasks", type="direct", durable=True)
TASKS_QUEUE = Queue(
    "order-sync.tasks", exchange=TASKS_EXCHANGE, routing_key="order-sync.tasks", durable=True
)

#: Events that cannot succeed, each wrapped in an entry saying why.
DEAD_LETTER_EXCHANGE = Exchange("order-sync.dead-letters", type="direct", durable=True)
DEAD_LETTER_QUEUE = Queue(
    "order-sync.dead-letters",
    exchange=DEAD_LETTER_EXCHANGE,
    routing_key="order-sync.dead-letters",
    durable=True,
)

PUBLISHER_QUEUES = (*EVENT_QUEUES, DEAD_LETTER_QUEUE)
