"""Fault injection, counted: each fault strikes while a stream of events flows.

Afterwards every event is accounted for exactly once: applied (and its order holds exactly what
its newest events say, field by field) or dead-lettered with the reason expected for it. The
ledger comes from the worker's own records (its "event applied" log lines and the dead-letter
queue), and the simulator's stored orders are checked against it.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

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


def records(pipeline: Pipeline) -> list[dict[str, Any]]:
    """The workers' log records; a SIGKILLed worker's last line may be cut short."""
    found = []
    for line in pipeline.log_lines():
        try:
            found.append(json.loads(line))
        except ValueError:
            continue
    return found


def ledger(pipeline: Pipeline) -> tuple[set[str], dict[str, str]]:
    applied = {
        event_id
        for record in records(pipeline)
        if record.get("event") == "event applied"
        for event_id in record["event_ids"]
    }
    dead = {entry["event_id"]: entry["reason"] for entry in pipeline.dead_letters()}
    return applied, dead


def settle(pipeline: Pipeline, stream: Stream, timeout: float = 120) -> None:
    """Wait until every event is accounted for, then check the account."""
    total = len(stream.events)

    def accounted() -> bool:
        applied, dead = ledger(pipeline)
        return len(applied | set(dead)) >= total

    wait_for(accounted, timeout, what=f"all {total} events applied or dead-lettered")
    applied, dead = ledger(pipeline)
    assert not applied & set(dead), "an event was both applied and dead-lettered"
    assert applied == stream.applied_ids
    assert dead == stream.rejected
    for order_id, fields in stream.expected.items():
        stored = pipeline.state.order(order_id) or {}
        assert {k: stored.get(k) for k in fields} == fields, f"order {order_id}"
    assert all(p.poll() is None for p in pipeline.workers[-1:]), "the worker died"


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
        time.sleep(2)  # the worker meets the outage with events in hand
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
    time.sleep(1.5)  # well within the retry budget set for this fault below
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

# The suite's default budget (5 retries, backoff up to 0.3 s) runs out within about a second.
BUDGET = {
    "API refusing connections": {
        "ORDER_SYNC_MAX_RETRIES": "12",
        "ORDER_SYNC_RETRY_BACKOFF_MAX": "1",
    }
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
        settle(pipeline, stream)
        assert EVIDENCE[fault](pipeline), f"no sign that the fault ({fault}) struck"
    finally:
        if pipeline.simulator is not simulator:  # the test fixture stops the first one only
            pipeline.simulator.stop()
