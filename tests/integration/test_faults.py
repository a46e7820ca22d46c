"""Fault injection, counted: each fault strikes while a stream of events flows.

Afterwards every event is accounted for exactly once: applied (and its order holds exactly what
its newest events say, field by field) or dead-lettered with the reason expected for it. The
ledger comes from the worker's own records (its "event applied" log lines and the dead-letter
queue), counted with multiplicity: an event applied or dead-lettered twice counts twice, and
only a fault that explains a second outcome may leave one (see ``REPEATS``). The simulator's
stored orders are checked against the ledger.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.integration.ledger import Ledger, ledger, node_name, records, wait_drained
from tests.integration.ledger import applied as applied_by
from tests.support import (
    Pipeline,
    make_event,
    redis_down,
    restart_rabbitmq,
    wait_for,
)
from worker.publisher import EventPublisher
from worker.simulator import SimulatorServer

pytestmark = pytest.mark.integration

ORDERS = 12


@dataclass
class Stream:
    """Two events per order (the second newer), plus one event that can never be valid."""

    base: int
    events: list[dict[str, Any]] = field(default_factory=list)
    expected: dict[int, dict[str, Any]] = field(default_factory=dict)  # order -> stored fields
    rejected: dict[str, str] = field(default_factory=dict)  # event id -> dead-letter reason

    def __post_init__(self) -> None:
        for i in range(ORDERS):
            order_id = self.base + i
            first = make_event(order_id, customer_id=100 + i, sales_rep_1=i + 1)
            first["occurred_at"] = "2026-11-26T10:01:00Z"
            second = make_event(order_id, customer_id=200 + i)
            second["occurred_at"] = "2026-11-26T10:02:00Z"
            self.events += [first, second]
            self.expected[order_id] = {"CustomerId": 200 + i, "SalesRep1": i + 1}
        invalid = make_event(self.base, customer_id="one hundred")
        self.events.append(invalid)
        self.rejected[invalid["event_id"]] = "invalid_event"

    @property
    def orders(self) -> list[int]:
        return sorted(self.expected)

    def give_up_on(self, order_id: int, reason: str) -> None:
        """Expect both events of ``order_id`` dead-lettered with ``reason``, never applied."""
        del self.expected[order_id]
        for event in self.events:
            if event["order_id"] == order_id and event["event_id"] not in self.rejected:
                self.rejected[event["event_id"]] = reason

    def only_first(self, order_id: int) -> None:
        """Drop the order's second event: one event, so a late-landing retry changes nothing."""
        second = [e for e in self.events if e["order_id"] == order_id][1]
        self.events.remove(second)
        self.expected[order_id]["CustomerId"] = second["changes"]["customer_id"] - 100

    @property
    def applied_ids(self) -> set[str]:
        return {e["event_id"] for e in self.events if e["event_id"] not in self.rejected}


def settle(pipeline: Pipeline, stream: Stream, fault: str, timeout: float = 120) -> Ledger:
    """Wait until every event is accounted for and nothing more can happen; check the account."""
    ids = {event["event_id"] for event in stream.events}
    wait_for(
        lambda: ledger(pipeline).accounted(ids),
        timeout,
        what=f"all {len(ids)} events applied or dead-lettered",
    )
    wait_drained(pipeline)  # a late second outcome would come before this
    book = ledger(pipeline)
    assert book.stored == len(book.entries), f"dead letters that are not entries: {book.summary()}"
    assert set(book.applied) == stream.applied_ids, book.summary()
    assert set(book.dead) == set(stream.rejected), book.summary()
    for event_id, reasons in book.reasons.items():
        assert set(reasons) == {stream.rejected[str(event_id)]}, (event_id, reasons)
    explained = REPEATS.get(fault, lambda _p, _b, _e: False)
    for event_id in sorted(ids):
        once = (book.applied[event_id], book.dead[event_id]) in ((1, 0), (0, 1))
        assert once or explained(pipeline, book, event_id), (
            f"{event_id}: applied {book.applied[event_id]} times, dead-lettered "
            f"{book.dead[event_id]} times; {book.summary()}"
        )
    for order_id, fields in stream.expected.items():
        stored = pipeline.state.order(order_id) or {}
        assert {k: stored.get(k) for k in fields} == fields, f"order {order_id}"
    assert all(p.poll() is None for p in pipeline.workers[-1:]), "the worker died"
    return book


def send(pipeline: Pipeline, *events: dict[str, Any]) -> None:
    """Publish as a non-Python upstream would: no validation on the way, invalid events too."""
    with EventPublisher(pipeline.broker) as publisher:
        for event in events:
            publisher.publish_raw(json.dumps(event), event["event_id"])


# Each fault: (prepare the pipeline before the worker starts, strike while events flow).
Fault = Callable[[Pipeline, Stream], None]


def worker_killed(pipeline: Pipeline, stream: Stream) -> None:
    pipeline.state.latency_ms = 300
    send(pipeline, *stream.events)
    first = pipeline.workers[0]
    wait_for(lambda: len(pipeline.state.orders()) >= 2, what="the first PUTs")
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert len(pipeline.state.orders()) < len(stream.orders), "killed too late to matter"
    pipeline.state.latency_ms = 0
    pipeline.start_worker()


def broker_restarted(pipeline: Pipeline, stream: Stream) -> None:
    pipeline.state.latency_ms = 200
    half = len(stream.events) // 2
    send(pipeline, *stream.events[:half])
    restart_rabbitmq()
    pipeline.state.latency_ms = 0
    send(pipeline, *stream.events[half:])


def redis_restarted(pipeline: Pipeline, stream: Stream) -> None:
    pipeline.state.latency_ms = 100
    half = len(stream.events) // 2
    send(pipeline, *stream.events[:half])
    with redis_down():
        send(pipeline, *stream.events[half:])
        wait_for(lambda: EVIDENCE["Redis restarted"](pipeline), what="a task to meet the outage")
    pipeline.state.latency_ms = 0


def api_failing(pipeline: Pipeline, stream: Stream) -> None:
    for order_id in stream.orders:
        pipeline.state.script_order(order_id, [503, 500, "drop"])
    hopeless = stream.orders[-1]
    pipeline.state.script_order(hopeless, [500] * 50)
    stream.give_up_on(hopeless, "retries_exhausted")
    send(pipeline, *stream.events)


def api_refusing_connections(pipeline: Pipeline, stream: Stream) -> None:
    port, state = pipeline.simulator.port, pipeline.simulator.state
    pipeline.simulator.stop()
    send(pipeline, *stream.events)
    # Back as soon as a call has failed: with the budget set for this fault below, no event
    # can use up its retries in the moment that takes, whatever the backoff's jitter draws.
    wait_for(lambda: EVIDENCE["API refusing connections"](pipeline), what="a refused call")
    pipeline.simulator = SimulatorServer(port=port, state=state).start()


def token_endpoint_down(pipeline: Pipeline, stream: Stream) -> None:
    pipeline.state.script_token([503, "drop", 503])
    send(pipeline, *stream.events)


def api_slower_than_the_timeout(pipeline: Pipeline, stream: Stream) -> None:
    # A call that timed out may still land later; an order with one event keeps that harmless
    # (a second event's newer PUT could be overwritten by it, as with any HTTP client).
    for order_id in stream.orders[::3]:
        stream.only_first(order_id)
        pipeline.state.script_order(order_id, ["slow:1500"])
    send(pipeline, *stream.events)


FAULTS: dict[str, Fault] = {
    "worker SIGKILLed": worker_killed,
    "RabbitMQ restarted": broker_restarted,
    "Redis restarted": redis_restarted,
    "API answering 5xx": api_failing,
    "API refusing connections": api_refusing_connections,
    "token endpoint down": token_endpoint_down,
    "API slower than the timeout": api_slower_than_the_timeout,
}


def _logged(pipeline: Pipeline, event: str, error: str = "") -> bool:
    return any(
        r.get("event", "").startswith(event) and error in r.get("error", "")
        for r in records(pipeline)
    )


# What shows that each fault really struck (a fault that missed would prove nothing).
EVIDENCE: dict[str, Callable[[Pipeline], bool]] = {
    "worker SIGKILLed": lambda p: p.workers[0].returncode == -signal.SIGKILL,
    "RabbitMQ restarted": lambda p: _logged(p, "consumer: Connection to broker lost"),
    "Redis restarted": lambda p: _logged(p, "shared store unavailable"),
    "API answering 5xx": lambda p: _logged(p, "event retry scheduled", "HTTP 503"),
    "API refusing connections": lambda p: _logged(p, "event retry scheduled", "connection"),
    "token endpoint down": lambda p: _logged(p, "event retry scheduled", "token request"),
    "API slower than the timeout": lambda p: _logged(p, "event retry scheduled", "timed out"),
}

# The suite's default budget (5 retries, backoff up to 0.3 s) can run out in a few
# milliseconds when the jitter draws short waits; 20 retries, each waiting on the broker and
# up to a second of backoff, cannot.
BUDGET = {
    "API refusing connections": {
        "ORDER_SYNC_MAX_RETRIES": "20",
        "ORDER_SYNC_RETRY_BACKOFF_MAX": "1",
    },
    # Every order fails its first three calls, so to the fleet it is an outage: it pauses and
    # probes, each probe spending one order's scripted failure. Probes a second apart at most
    # keep the test short (the default cap of 30 s would take minutes to get through them).
    "API answering 5xx": {"ORDER_SYNC_PROBE_INTERVAL_MAX": "1"},
}


# A fault that can legitimately give one event a second outcome says so here: given the
# ledger and an event id with other than exactly one outcome, whether the fault explains it.
Explains = Callable[[Pipeline, Ledger, str], bool]


def killed_after_doing_it(pipeline: Pipeline, book: Ledger, event_id: str) -> bool:
    """The first worker applied or dead-lettered the event (its PUT answered or its entry
    stored, its line written) and was SIGKILLed before recording that in the shared store and
    acking the message; the message came back to the second worker, which did it again. So:
    the same outcome once by each worker, never twice by one."""
    if book.applied[event_id] and book.dead[event_id]:
        return False
    if book.applied[event_id]:
        by_worker = [applied_by(pipeline, worker)[event_id] for worker in (0, 1)]
        return by_worker == [1, 1]
    by = sorted(e.get("worker", "") for e in book.entries if e.get("event_id") == event_id)
    return by == sorted(node_name(pipeline, worker) for worker in (0, 1))


def dead_lettered_again_after_a_lost_ack(pipeline: Pipeline, book: Ledger, event_id: str) -> bool:
    """The entry of an invalid event was stored but the ack of its message was lost with the
    broker connection, so the message came back. An invalid event never reaches its order's
    record in the shared store (an applied event's copy finds itself done there and is acked
    without a second PUT), so it is dead-lettered again, for the same reason. Each entry then
    comes from its own delivery, which the worker handed to a task of its own."""
    entries = [e for e in book.entries if e.get("event_id") == event_id]
    return (
        book.applied[event_id] == 0
        and [e["reason"] for e in entries] == ["invalid_event"] * 2
        and len({e.get("task_id") for e in entries}) == 2
    )


def applied_as_redis_went_down(pipeline: Pipeline, book: Ledger, event_id: str) -> bool:
    """The event's PUT landed, but its turn could not record that as Redis went down, and said
    so; once the order's lock ran out, Redis (back with its data) still held the event as
    waiting, so a later turn applied it again, with the same values."""
    if book.dead[event_id] or book.applied[event_id] != 2:
        return False
    found = records(pipeline)
    first = next(
        r["turn_id"]
        for r in found
        if r.get("event") == "event applied" and event_id in r["event_ids"]
    )
    return any(
        r.get("turn_id") == first and r.get("event", "").startswith("shared store unavailable")
        for r in found
    )


REPEATS: dict[str, Explains] = {
    "worker SIGKILLed": killed_after_doing_it,
    "RabbitMQ restarted": dead_lettered_again_after_a_lost_ack,
    "Redis restarted": applied_as_redis_went_down,
}


@pytest.mark.parametrize("fault", FAULTS, ids=list(FAULTS))
def test_every_event_is_applied_or_dead_lettered_through(fault: str, fleet: Pipeline) -> None:
    pipeline = fleet
    pipeline.env_overrides.update(
        ORDER_SYNC_ORDER_LOCK_TTL="3",  # a killed worker's locks free up quickly
        ORDER_SYNC_HTTP_TIMEOUT="0.5",
        ORDER_SYNC_MAX_RETRIES="5",
    )
    pipeline.env_overrides.update(BUDGET.get(fault, {}))
    stream = Stream(base=40_000 + 100 * list(FAULTS).index(fault))
    simulator = pipeline.simulator
    pipeline.start_worker()
    try:
        FAULTS[fault](pipeline, stream)
        settle(pipeline, stream, fault)
        assert EVIDENCE[fault](pipeline), f"no sign that the fault ({fault}) struck"
    finally:
        if pipeline.simulator is not simulator:  # the test fixture stops the first one only
            pipeline.simulator.stop()
