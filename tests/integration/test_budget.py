"""The API budget under a backlog: one PUT per order, live changes first, nothing held past
RabbitMQ's consumer_timeout, and the backlog visible in ``order-sync status``.

Real RabbitMQ, the simulator (which enforces the same rate limit and answers 429 above it),
and worker processes; the rate limit is low so that a small backlog lasts several seconds.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.ledger import applied, dead_letter_count
from tests.support import Pipeline, make_event, order_sync, wait_for
from worker.broker.topology import EVENTS_BULK_QUEUE, EVENTS_QUEUE
from worker.simulator.ratelimit import RateLimit

FIELDS = ("customer_id", "company_id", "sales_rep_1")
BODY = {"customer_id": "CustomerId", "company_id": "CompanyId", "sales_rep_1": "SalesRep1"}


def backlog(first_order: int, orders: int, per_order: int) -> list[dict[str, Any]]:
    """``per_order`` events for each order, each setting one field to a value that grows with
    its ``occurred_at``, published in an order that interleaves the orders."""
    events = []
    for n in range(per_order):
        for order_id in range(first_order, first_order + orders):
            event = make_event(order_id, f"e-{order_id}-{n}", customer_id=None)
            event["occurred_at"] = f"2026-11-26T10:00:{n:02d}Z"
            event["changes"] = {FIELDS[n % len(FIELDS)]: 100 * n + order_id % 100}
            events.append(event)
    return events


def newest(events: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    want: dict[int, dict[str, Any]] = {}
    for event in sorted(events, key=lambda e: e["occurred_at"]):
        for name, value in event["changes"].items():
            want.setdefault(event["order_id"], {})[BODY[name]] = value
    return want


def holds_newest(pipeline: Pipeline, want: dict[int, dict[str, Any]]) -> bool:
    for order_id, fields in want.items():
        order = pipeline.state.order(order_id) or {}
        if any(order.get(name) != value for name, value in fields.items()):
            return False
    return True


def puts(pipeline: Pipeline) -> list[dict[str, Any]]:
    return [r for r in pipeline.state.requests() if r["method"] == "PUT"]


def depth(pipeline: Pipeline, queue: Any) -> int:
    from tests.support import queue_count

    return queue_count(pipeline.broker, queue)


def limit_to(pipeline: Pipeline, rate: str) -> None:
    """The fleet's rate limit, which the simulator enforces too (429 above it)."""
    pipeline.env_overrides["ORDER_SYNC_RATE_LIMIT"] = rate
    pipeline.state.rate_limit = RateLimit.parse(rate)


def status(pipeline: Pipeline, *args: str) -> subprocess.CompletedProcess[str]:
    return order_sync(pipeline, "status", *args)


def rabbitmqctl(*args: str) -> str:
    return subprocess.run(
        ["rabbitmqctl", *args], check=True, capture_output=True, text=True, timeout=60
    ).stdout


@pytest.fixture
def short_consumer_timeout() -> Iterator[float]:
    """RabbitMQ's consumer_timeout lowered to 3 s for the channels opened meanwhile (3.10 sets
    it only for the whole node), and restored after."""
    before = rabbitmqctl("eval", "application:get_env(rabbit, consumer_timeout).").strip()
    rabbitmqctl("eval", "application:set_env(rabbit, consumer_timeout, 3000).")
    try:
        yield 3.0
    finally:
        if before.startswith("{ok,"):
            value = before.removeprefix("{ok,").removesuffix("}")
            rabbitmqctl("eval", f"application:set_env(rabbit, consumer_timeout, {value}).")
        else:
            rabbitmqctl("eval", "application:unset_env(rabbit, consumer_timeout).")


def drain_waiting_backlog(
    pipeline: Pipeline, events: list[dict[str, Any]], rate: str, timeout: float
) -> list[dict[str, Any]]:
    """Publish ``events`` before a worker limited to ``rate`` starts, wait until every order
    holds its newest values, and return the PUTs sent."""
    want = newest(events)
    pipeline.publish(*events)
    limit_to(pipeline, rate)
    pipeline.start_worker()
    wait_for(lambda: holds_newest(pipeline, want), timeout, "every order to hold its newest values")
    return puts(pipeline)


def test_a_backlog_waiting_at_start_costs_one_put_per_order_within_the_limit(
    pipeline: Pipeline,
) -> None:
    events = backlog(7100, 30, 5)
    want = newest(events)
    sent = drain_waiting_backlog(pipeline, events, "10/s", 30)
    per_order = Counter(r["order_id"] for r in sent)
    assert all(per_order[order_id] == 1 for order_id in want), per_order
    assert len(sent) == len(want)
    assert all(r["status"] == 200 for r in sent), "the API answered something else (429?)"
    # Every event ended applied, once, inside the one PUT of its order.
    assert applied(pipeline) == Counter({e["event_id"]: 1 for e in events})
    assert dead_letter_count(pipeline) == 0


def test_a_live_change_goes_before_a_bulk_backlog(pipeline: Pipeline) -> None:
    events = backlog(7200, 40, 2)
    limit_to(pipeline, "5/s")
    pipeline.start_worker()
    pipeline.publish(*events, bulk=True)
    wait_for(lambda: depth(pipeline, EVENTS_BULK_QUEUE) == 0, 30, "the bulk backlog to be read")
    wait_for(lambda: len(puts(pipeline)) >= 3, 30, "the backlog to start draining")
    live = make_event(7299, "live-change")
    pipeline.publish(live)
    before = len(puts(pipeline))
    wait_for(lambda: pipeline.state.order(7299) is not None, 30, "the live change")
    wait_for(lambda: holds_newest(pipeline, newest(events)), 60, "the bulk backlog to drain")
    sent = [r["order_id"] for r in puts(pipeline)]
    position = sent.index(7299)
    # It went within a turn or two of its publication, not after the 40 bulk orders ...
    assert position <= before + 2, (position, before)
    # ... which were still waiting then: most of them went after it.
    assert len(sent[position + 1 :]) >= 40 - position - 1 > 20, sent
    assert dead_letter_count(pipeline) == 0
    assert depth(pipeline, EVENTS_QUEUE) == 0


def test_a_backlog_longer_than_consumer_timeout_drains_without_a_closed_channel(
    pipeline: Pipeline, short_consumer_timeout: float
) -> None:
    events = backlog(7300, 30, 3)
    want = newest(events)
    sent = drain_waiting_backlog(pipeline, events, "4/s", 60)
    lasted = sent[-1]["at"] - sent[0]["at"]
    # The backlog lasted several consumer timeouts: a message held for it would have been seen.
    assert lasted > 2 * short_consumer_timeout, lasted
    lines = "\n".join(pipeline.log_lines())
    assert "PRECONDITION_FAILED" not in lines and "acknowledgement timeout" not in lines
    assert Counter(r["order_id"] for r in sent) == Counter({order_id: 1 for order_id in want})
    assert dead_letter_count(pipeline) == 0


def test_status_shows_the_backlog_the_budget_used_and_when_it_will_be_done(
    pipeline: Pipeline,
) -> None:
    events = backlog(7400, 20, 2)
    limit_to(pipeline, "4/s")
    pipeline.start_worker()
    pipeline.publish(*events, bulk=True)
    wait_for(lambda: depth(pipeline, EVENTS_BULK_QUEUE) == 0, 30, "the backlog to be read")
    result = status(pipeline, "--json")
    assert result.returncode == 0, result.stderr
    waiting = json.loads(result.stdout)["backlog"]
    orders = waiting["orders"]["bulk"]
    assert 0 < orders <= 20 and waiting["orders"]["live"] == 0
    # Each waiting order holds both its events (none was sent before its turn).
    assert waiting["events"] == 2 * orders
    assert waiting["budget_per_minute"] == 240
    # At 90% of 4/s, each order's turn comes every 0.28 s.
    assert waiting["drain_seconds"] == pytest.approx(orders / 3.6, abs=0.1)
    assert waiting["longest_wait_seconds"]["bulk"] >= 0
    table = status(pipeline).stdout
    assert "backlog" in table and "done by" in table
    wait_for(lambda: holds_newest(pipeline, newest(events)), 60, "the backlog to drain")
    # Every order's two events went in one PUT: 20 PUTs of two events in the last minutes.
    result = status(pipeline, "--json")
    sizes = json.loads(result.stdout)["backlog"]["events_per_put_last_5_minutes"]
    assert sizes["2"] == 20 and sum(sizes.values()) == 20, sizes
