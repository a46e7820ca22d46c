"""Benchmark: quorum queues against classic ones, and what losing a RabbitMQ node costs.

    .venv/bin/python -m tests.benchmarks.bench_queues                 # both, about 3 minutes
    .venv/bin/python -m tests.benchmarks.bench_queues --only throughput --events 3000 --repeat 3

1. Throughput, in one run, interleaved: a backlog of events (one per order) published before one
   worker (threads 16, Redis store) starts, drained into a simulator that answers at once, on
   - classic queues on the main broker (one node),
   - quorum queues on the main broker (one node: the queue type alone),
   - quorum queues on the three-node cluster (each message replicated to three nodes).
   Events/s from the first PUT to the last.
2. Node loss: two workers on the cluster (failover URL, each starting on another node), a steady
   stream of events; the node one worker is connected to (and the events queue's leader) is
   stopped. Seconds from the stop to the first PUT after it, and to the first PUT made by the
   worker that lost its node (it reconnects to another by itself); the same for the node the
   other worker is on.

Each run uses virtual hosts of its own. Needs RabbitMQ, Redis and the cluster of
``tests/cluster/rabbitmq-cluster.sh`` (started if need be).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from tests.benchmarks.harness import (
    STATE_REDIS_URL,
    Simulator,
    machine,
    median,
    our_worker,
    rate_between,
    running,
)
from tests.cluster.support import (
    NODES,
    QuorumBroker,
    ensure_cluster,
    failover_url,
    node_of,
    on_vhost,
    queue_infos,
    start_node,
    stop_node,
    url,
    vhost_on,
)
from tests.support import RABBITMQ_URL, make_event, wait_for
from worker.broker.topology import topology
from worker.settings import CLASSIC, QUEUE_TYPE_SETTING, QUORUM


def main_broker_url(vhost: str) -> str:
    return on_vhost(RABBITMQ_URL, vhost)


def drain(broker_url: str, kind: str, events: int, tmp: Path, first_order: int) -> dict[str, Any]:
    """A backlog of ``events`` drained by one worker; events/s and seconds."""
    tmp.mkdir(parents=True, exist_ok=True)
    redis.Redis.from_url(STATE_REDIS_URL).flushdb()
    QuorumBroker(broker_url, topology(kind)).publish(
        make_event(first_order + i) for i in range(events)
    )
    simulator = Simulator()
    try:
        worker = our_worker(simulator, tmp, **{QUEUE_TYPE_SETTING: kind})
        worker.env["CELERY_BROKER_URL"] = broker_url
        with running(worker):
            wait_for(
                lambda: simulator.stats().get("put_requests", 0) >= events,
                timeout=600,
                what=f"{events} PUTs",
            )
        times = simulator.put_times()
    finally:
        simulator.stop()
    return {"events_per_second": round(rate_between(times), 1), "puts": len(times)}


def throughput(tmp: Path, events: int, repeat: int) -> dict[str, Any]:
    setups: dict[str, tuple[Callable[[str], str], str | None, str]] = {
        "classic, one node": (main_broker_url, None, CLASSIC),
        "quorum, one node": (main_broker_url, None, QUORUM),
        "quorum, three-node cluster": (lambda v: failover_url(v, "a"), "a", QUORUM),
    }
    runs: dict[str, list[float]] = {name: [] for name in setups}
    order = 1_000_000
    for round_ in range(repeat):
        for name, (make_url, node, kind) in setups.items():
            with vhost_on(node) as vhost:
                result = drain(make_url(vhost), kind, events, tmp / f"{round_}-{kind}", order)
            order += events
            runs[name].append(result["events_per_second"])
            print(f"  {name}: {result['events_per_second']} events/s", flush=True)
    return {
        "events": events,
        "runs": runs,
        "median_events_per_second": {name: median(values) for name, values in runs.items()},
    }


def reconnect_seconds(log: Path, seen: int, simulator: Simulator) -> float:
    """When the worker logging to ``log`` connected again (its ``seen``+1-th connection)."""
    wait_for(
        lambda: log.read_text().count("Connected to amqp://") > seen,
        timeout=120,
        what="the worker to reconnect",
    )
    reconnected = time.time()
    wait_for(
        lambda: any(t > reconnected for t in simulator.put_times()),
        what="PUTs after the reconnection",
    )
    return reconnected


def node_loss(tmp: Path) -> dict[str, Any]:
    """Seconds until PUTs flow again after the node a worker is on stops."""
    results = []
    simulator = Simulator()
    with vhost_on("c") as vhost:
        redis.Redis.from_url(STATE_REDIS_URL).flushdb()
        workers = []
        for first in ("a", "b"):
            (tmp / f"loss-{first}").mkdir(parents=True, exist_ok=True)
            worker = our_worker(simulator, tmp / f"loss-{first}", **{QUEUE_TYPE_SETTING: QUORUM})
            worker.env["CELERY_BROKER_URL"] = failover_url(vhost, first)
            workers.append(worker.start())
        stop = threading.Event()

        def stream() -> None:
            broker = QuorumBroker(failover_url(vhost, "c"))
            order = 2_000_000
            while not stop.is_set():
                broker.publish([make_event(order + i) for i in range(20)])
                order += 20
                time.sleep(0.1)  # about 200 events/s, below what two workers drain

        publisher = threading.Thread(target=stream)
        publisher.start()
        try:
            for worker_index, node in enumerate(("a", "b")):
                wait_for(lambda: len(simulator.put_times()) > 200, what="a steady stream")
                leader = node_of(queue_infos("c", vhost)["order-sync.events"].leader)
                log = workers[worker_index].log
                seen = log.read_text().count("Connected to amqp://")
                stopped = time.time()
                stop_node(node)
                reconnected = reconnect_seconds(log, seen, simulator)
                after = [t for t in simulator.put_times() if t > stopped]
                results.append(
                    {
                        "node": node,
                        "was_events_leader": leader == node,
                        "first_put_after_stop_s": round(after[0] - stopped, 2),
                        "worker_reconnected_after_s": round(reconnected - stopped, 2),
                    }
                )
                print(f"  node {node} lost: {results[-1]}", flush=True)
                start_node(node)
                wait_for(
                    lambda: all(
                        i.online == len(NODES)
                        for i in queue_infos("c", vhost).values()
                        if i.type == QUORUM
                    ),
                    timeout=120,
                    what="the cluster whole again",
                )
        finally:
            stop.set()
            publisher.join()
            for worker in workers:
                worker.stop()
            simulator.stop()
    return {"losses": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("throughput", "node-loss"))
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=2)
    options = parser.parse_args()
    problem = ensure_cluster()
    if problem:
        raise SystemExit(problem)
    report: dict[str, Any] = {"machine": machine(), "cluster": url("a", "")}
    with tempfile.TemporaryDirectory(prefix="bench-queues-") as folder:
        tmp = Path(folder)
        if options.only in (None, "throughput"):
            print("throughput", flush=True)
            report["throughput"] = throughput(tmp, options.events, options.repeat)
        if options.only in (None, "node-loss"):
            print("node loss", flush=True)
            report["node_loss"] = node_loss(tmp)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
