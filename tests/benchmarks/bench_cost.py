"""Benchmark: the CPU one event costs, split into schema, HTTP, shared store and broker.

    .venv/bin/python -m tests.benchmarks.bench_cost [--events N] [--repeat R]

Each part runs on its own in this process, the way the worker runs it, and is timed in CPU
seconds of this process (``time.process_time``), so waiting on the network costs nothing:

- schema: decoding and validating the event and building the Update Order body;
- HTTP: ``SellercloudClient.update_order`` against the simulator (in its own process);
- store: the four shared-store round trips of one event on Redis (announce; begin, which
  claims the order and takes its pending events; the rate limit's check; settle);
- broker: the event's one broker hop (read it, ack it), with kombu on RabbitMQ.

Medians of ``--repeat`` runs, in microseconds per event. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import redis
from kombu import Connection, Consumer, Message, Producer

from schemas.sellercloud import update_order_body
from tests.benchmarks.harness import (
    PASSWORD,
    RABBITMQ_URL,
    STATE_REDIS_URL,
    USERNAME,
    Simulator,
    bench_event,
    machine,
    median,
)
from worker.broker.topology import EVENTS_QUEUE
from worker.coordination.orders import OrderCoordinator
from worker.coordination.redis_store import RedisStore
from worker.intake import envelope as pipeline
from worker.sellercloud.client import SellercloudClient


def cpu_per_call(work: Callable[[int], None], count: int) -> float:
    """Microseconds of this process's CPU per call of ``work(n)``."""
    work(-1)  # warm: connections, caches, first imports
    started = time.process_time()
    for n in range(count):
        work(n)
    return 1e6 * (time.process_time() - started) / count


def envelope_of(n: int) -> dict[str, Any]:
    return pipeline.envelope(bench_event(2_000_000 + n), content_type="application/json")


def schema(count: int) -> float:
    envelopes = [envelope_of(n) for n in range(count)]

    def work(n: int) -> None:
        event = pipeline.prepare(envelopes[n], pipeline.Progress())
        update_order_body(event.changes)

    return cpu_per_call(work, count)


def http(count: int, simulator: Simulator) -> float:
    client = SellercloudClient(simulator.url, USERNAME, PASSWORD, timeout=10)
    body = update_order_body(pipeline.prepare(envelope_of(0), pipeline.Progress()).changes)
    return cpu_per_call(lambda n: client.update_order(3_000_000 + n, body), count)


def store(count: int) -> float:
    redis.Redis.from_url(STATE_REDIS_URL).flushdb()
    store = RedisStore(STATE_REDIS_URL)
    coordinator = OrderCoordinator(store, dedup_window=3600, lock_ttl=60)
    envelopes = {n: envelope_of(n) for n in range(-1, count)}  # -1: the warm-up call
    prepared = {n: pipeline.prepare(env, pipeline.Progress()) for n, env in envelopes.items()}

    def work(n: int) -> None:
        event, env = prepared[n], envelopes[n]
        coordinator.announce(event, env)
        _, first = coordinator.begin(event, env, "owner")
        assert first is not None and len(first[0]) == 1
        store.take_slot("bench:pause", "bench:slot", None, 1.0)  # the rate limit's check
        coordinator.settle(event.order_id, "owner", first[0], "applied", {"customer_id": "x"})

    return cpu_per_call(work, count)


def broker(count: int) -> float:
    raw = bench_event(1)
    with Connection(RABBITMQ_URL) as connection, Connection(RABBITMQ_URL) as publishing:
        channel = connection.default_channel
        EVENTS_QUEUE(channel).declare()
        EVENTS_QUEUE(channel).purge()
        producer = Producer(publishing.default_channel)
        for _ in range(count):  # the upstream publisher's part is not the worker's cost
            producer.publish(raw, exchange="", routing_key=EVENTS_QUEUE.name, delivery_mode=2)
        done = 0

        def hop(_body: Any, message: Message) -> None:
            nonlocal done
            done += 1
            message.ack()

        consumer = Consumer(channel, [EVENTS_QUEUE], callbacks=[hop], prefetch_count=256)
        with consumer:
            started = time.process_time()
            while done < count:
                connection.drain_events(timeout=10)
            return 1e6 * (time.process_time() - started) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    simulator = Simulator()
    parts: dict[str, list[float]] = {"schema": [], "http": [], "store": [], "broker": []}
    try:
        for _ in range(args.repeat):
            parts["schema"].append(schema(args.events))
            parts["http"].append(http(args.events, simulator))
            parts["store"].append(store(args.events))
            parts["broker"].append(broker(args.events))
    finally:
        simulator.stop()
    report = {
        "machine": machine(),
        "events_per_run": args.events,
        "cpu_us_per_event": {name: round(median(runs), 1) for name, runs in parts.items()},
        "runs": {name: [round(r, 1) for r in runs] for name, runs in parts.items()},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
