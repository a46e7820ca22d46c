"""A three-node RabbitMQ cluster losing nodes while events flow, on quorum queues.

The cluster (``tests/cluster/rabbitmq-cluster.sh``, started by ``.ci/run``) runs on this machine
beside the main broker; each test has a virtual host of its own on it. Two worker processes share
a Redis store, each given every node in its broker URL (kombu's failover list), in a different
order, so they start on different nodes. While events stream in, nodes are stopped: the one
holding the events queue's leader, then the node that took over; and, in the other test, all
three in turn (a rolling restart). Afterwards the outcomes are counted with multiplicity: every
event applied exactly once or dead-lettered exactly once with the reason expected for it (from
the workers' own log lines), no message the broker dead-lettered by itself (at the delivery
limit, an event would never be applied: the wait for every event's outcome would fail first),
every order holding its newest values, both workers still running, and each
worker whose node went away connected again to another by itself.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.cluster.support import (
    NODES,
    PORTS,
    QUORUM_TOPOLOGY,
    QuorumBroker,
    ensure_cluster,
    failover_url,
    node_of,
    queue_infos,
    start_node,
    stop_node,
    url,
    vhost_on,
)
from tests.integration.ledger import applied, records
from tests.support import FLEET_REDIS_URL, Pipeline, make_event, wait_for
from worker.deadletter.reasons import INVALID_EVENT, RETRIES_EXHAUSTED
from worker.settings import QUEUE_TYPE_SETTING, QUORUM
from worker.simulator import SimulatorServer

pytestmark = pytest.mark.integration

EVENTS_QUEUE = QUORUM_TOPOLOGY.events.name
BATCH_ORDERS = 8  # orders per batch; two events each, the second newer


@pytest.fixture(scope="module")
def cluster() -> None:
    reason = ensure_cluster()
    if reason is not None:
        pytest.skip(f"the three-node RabbitMQ cluster is not up and could not be started: {reason}")


@pytest.fixture
def vhost(cluster: None) -> Iterator[str]:
    # Whole again, should an earlier test have been cut short with a node down.
    reason = ensure_cluster()
    assert reason is None, reason
    with vhost_on("a") as name:
        yield name


@pytest.fixture
def two_workers(
    vhost: str, simulator: SimulatorServer, tmp_path: Path
) -> Iterator[tuple[Pipeline, QuorumBroker]]:
    client = redis.Redis.from_url(FLEET_REDIS_URL)
    client.flushdb()
    client.close()
    pipeline = Pipeline(
        failover_url(vhost, "a"),
        simulator,
        tmp_path,
        env_overrides={QUEUE_TYPE_SETTING: QUORUM, "ORDER_SYNC_REDIS_URL": FLEET_REDIS_URL},
    )
    try:
        pipeline.start_worker()
        pipeline.broker_url = failover_url(vhost, "b")
        pipeline.start_worker()
        yield pipeline, QuorumBroker(url("c", vhost))
    finally:
        pipeline.stop_workers()


@dataclass
class Stream:
    """Batches of events, and what each should end as."""

    batches: list[list[dict[str, Any]]] = field(default_factory=list)
    expected: dict[int, dict[str, Any]] = field(default_factory=dict)  # order -> stored fields
    rejected: dict[str, str] = field(default_factory=dict)  # event id -> dead-letter reason
    next_order: int = 91000

    def batch(self) -> list[dict[str, Any]]:
        events = []
        for _ in range(BATCH_ORDERS):
            order_id, self.next_order = self.next_order, self.next_order + 1
            first = make_event(order_id, customer_id=order_id % 997, sales_rep_1=order_id % 89)
            first["occurred_at"] = "2026-11-26T10:01:00Z"
            second = make_event(order_id, customer_id=order_id % 991)
            second["occurred_at"] = "2026-11-26T10:02:00Z"
            events += [second, first] if order_id % 2 else [first, second]
            self.expected[order_id] = {"CustomerId": order_id % 991, "SalesRep1": order_id % 89}
        self.batches.append(events)
        return events

    def doomed(self, pipeline: Pipeline) -> list[dict[str, Any]]:
        """An invalid event, and an order the API keeps refusing with 500 (retried in the
        broker's delay queues until its retries are used up)."""
        invalid = make_event(self.next_order, customer_id="seven")
        hopeless = make_event(self.next_order + 1, customer_id=5)
        self.next_order += 2
        pipeline.state.script_order(hopeless["order_id"], [500] * 100)
        self.rejected[invalid["event_id"]] = INVALID_EVENT
        self.rejected[hopeless["event_id"]] = RETRIES_EXHAUSTED
        self.batches.append([invalid, hopeless])
        return [invalid, hopeless]

    @property
    def ids(self) -> set[str]:
        return {event["event_id"] for batch in self.batches for event in batch}


def dead_lettered(pipeline: Pipeline) -> tuple[Counter[str], dict[str, set[str]]]:
    """Entries per event id and their reasons, from the workers' "event dead-lettered" lines
    (one per entry published; where entries go next is not this test's business)."""
    counts: Counter[str] = Counter()
    reasons: dict[str, set[str]] = {}
    for record in records(pipeline):
        if record.get("event") == "event dead-lettered":
            event_id = str(record.get("dead_lettered_event_id"))
            counts[event_id] += 1
            reasons.setdefault(event_id, set()).add(str(record.get("reason")))
    return counts, reasons


def broker_dead_letters(broker: QuorumBroker) -> int:
    """Messages the broker dead-lettered itself (``x-death``) still in the dead-letter queue."""
    return sum(1 for _, headers in broker.dead_letters() if "x-death" in headers)


def accounted(pipeline: Pipeline, ids: set[str]) -> bool:
    return ids <= set(applied(pipeline)) | set(dead_lettered(pipeline)[0])


def work_left(vhost: str) -> dict[str, int]:
    """Messages in our work queues and Celery's delay queues, ready or held, on any live node."""
    for node in NODES:
        try:
            infos = queue_infos(node, vhost)
        except Exception:  # noqa: S112 - that node is down; ask the next
            continue
        return {
            name: info.messages
            for name, info in infos.items()
            if info.messages and name != QUORUM_TOPOLOGY.dead_letters.name
        }
    raise AssertionError("no node of the cluster answered")


def leader(vhost: str, queue: str, alive: str) -> str:
    infos = wait_for(
        lambda: (found := queue_infos(alive, vhost).get(queue)) and found.leader and found,
        what=f"a leader for {queue}",
    )
    return node_of(infos.leader)


def whole_again(vhost: str, node: str) -> None:
    """Until the node runs again and every member of our quorum queues is online."""
    start_node(node)
    wait_for(
        lambda: all(
            info.online == len(NODES)
            for info in queue_infos(node, vhost).values()
            if info.type == QUORUM
        ),
        timeout=90,
        what="every quorum queue with all its members online",
    )


def connected_ports(pipeline: Pipeline, worker: int) -> list[int]:
    """The node (AMQP port) of each "Connected to" line of a worker, in order."""
    ports = []
    for record in records(pipeline, worker):
        event = str(record.get("event", ""))
        if event.startswith("Connected to amqp://"):
            ports.append(int(event.split("@", 1)[1].split("/", 1)[0].rsplit(":", 1)[1]))
    return ports


def lose(
    pipeline: Pipeline,
    broker: QuorumBroker,
    stream: Stream,
    vhost: str,
    node: str,
) -> dict[int, int]:
    """Publish a batch, stop ``node`` while it is worked on, publish another, wait until both
    are accounted for, start the node again. Returns, per worker, its "Connected to" lines
    before the loss."""
    before = {worker: len(connected_ports(pipeline, worker)) for worker in (0, 1)}
    first = stream.batch()
    broker.publish(first)
    wait_for(
        lambda: len(applied(pipeline)) > len(stream.ids) - len(first) - 2 - BATCH_ORDERS,
        what="the batch to be worked on",
    )
    stop_node(node)
    try:
        survivor = next(n for n in NODES if n != node)
        broker.url = url(survivor, vhost)
        broker.publish(stream.batch())
        wait_for(
            lambda: accounted(pipeline, stream.ids),
            timeout=60,
            what=f"every event applied or dead-lettered with node {node} down",
        )
    finally:
        whole_again(vhost, node)
    return before


def settle(pipeline: Pipeline, broker: QuorumBroker, stream: Stream, vhost: str) -> None:
    """Wait until every event is accounted for and nothing can still happen; count."""
    wait_for(lambda: accounted(pipeline, stream.ids), timeout=120, what="every event")
    try:
        wait_for(lambda: not work_left(vhost), timeout=60, what="no work left in the cluster")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}: {work_left(vhost)}") from exc
    done = applied(pipeline)
    dead, reasons = dead_lettered(pipeline)
    summary = f"applied {dict(done)}; dead-lettered {dict(dead)}"
    assert broker_dead_letters(broker) == 0, f"the broker dead-lettered messages: {summary}"
    for event_id in sorted(stream.ids):
        outcome = (done[event_id], dead[event_id])
        if event_id in stream.rejected:
            assert outcome == (0, 1), f"{event_id} should be dead-lettered once: {summary}"
            assert reasons[event_id] == {stream.rejected[event_id]}, (event_id, reasons)
        else:
            assert outcome == (1, 0), f"{event_id} should be applied once: {summary}"
    assert set(dead) <= set(stream.ids), summary
    for order_id, fields in stream.expected.items():
        stored = pipeline.state.order(order_id) or {}
        assert {k: stored.get(k) for k in fields} == fields, f"order {order_id}: {stored}"
    assert all(process.poll() is None for process in pipeline.workers), "a worker died"


def reconnected(pipeline: Pipeline, before: dict[int, int], lost: str) -> None:
    """Each worker that was on node ``lost`` connected to another node afterwards."""
    for worker, seen in before.items():
        ports = connected_ports(pipeline, worker)
        if ports[seen - 1] == PORTS[lost]:
            later = ports[seen:]
            assert later and later[-1] != PORTS[lost], (worker, lost, ports)


def test_losing_the_leader_node_then_another(
    two_workers: tuple[Pipeline, QuorumBroker], vhost: str
) -> None:
    pipeline, broker = two_workers
    pipeline.state.latency_ms = 40
    stream = Stream()
    broker.publish(stream.doomed(pipeline))

    first = leader(vhost, EVENTS_QUEUE, "c")
    before = lose(pipeline, broker, stream, vhost, first)
    reconnected(pipeline, before, first)

    second = leader(vhost, EVENTS_QUEUE, first)
    assert second != first, "the events queue's leader did not move"
    before = lose(pipeline, broker, stream, vhost, second)
    reconnected(pipeline, before, second)

    settle(pipeline, broker, stream, vhost)
    report = {"lost": [first, second], "events": len(stream.ids)}
    (pipeline.tmp_path / "report.json").write_text(json.dumps(report))


def test_rolling_restart_of_every_node(
    two_workers: tuple[Pipeline, QuorumBroker], vhost: str
) -> None:
    pipeline, broker = two_workers
    pipeline.state.latency_ms = 40
    stream = Stream()
    broker.publish(stream.doomed(pipeline))
    for node in NODES:
        before = lose(pipeline, broker, stream, vhost, node)
        reconnected(pipeline, before, node)
    settle(pipeline, broker, stream, vhost)
