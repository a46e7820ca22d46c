"""A fleet of worker processes sharing Redis: ordering, de-duplication, coalescing, one token,
one rate limit, 429 pauses and a Redis restart."""

from __future__ import annotations

from collections import defaultdict

import pytest

from tests.integration.ledger import (
    applied,
    applied_orders,
    assert_no_dead_letters,
    dead_letter_count,
    records,
    wait_drained,
    wait_until_or_drained,
)
from tests.support import Pipeline, make_event, redis_down, wait_for

pytestmark = pytest.mark.integration


def at(minute: int) -> str:
    return f"2026-11-26T10:{minute:02d}:00Z"


def event(order_id: int, minute: int, event_id: str | None = None, **changes: object) -> dict:
    payload = make_event(order_id, event_id, **changes)
    payload["occurred_at"] = at(minute)
    return payload


def puts(pipeline: Pipeline, order_id: int | None = None) -> list[dict]:
    return [
        r
        for r in pipeline.state.requests()
        if r["method"] == "PUT" and (order_id is None or r["order_id"] == order_id)
    ]


def test_an_older_event_never_overwrites_a_newer_one(fleet: Pipeline) -> None:
    fleet.start_worker()
    fleet.publish(event(9700, 30, customer_id=2, sales_rep_1=20))
    fleet.wait_applied(9700)
    # Delivered late: its customer_id is older than the one applied, its company_id is news.
    fleet.publish(event(9700, 10, customer_id=1, company_id=5))
    wait_for(lambda: len(puts(fleet, 9700)) == 2, what="the second PUT")
    assert puts(fleet, 9700)[1]["body"] == {"CompanyId": 5}
    assert fleet.state.order(9700) == {"CustomerId": 2, "SalesRep1": 20, "CompanyId": 5}
    # An event with nothing newer left to say costs no call at all. The second event logged
    # a skipped field too: wait for the third event's own line, then for its task to end (its
    # message acked), and only then count the calls.
    fleet.publish(event(9700, 5, "evt-stale", customer_id=0))
    wait_for(
        lambda: (
            any(
                r.get("event") == "stale fields skipped"
                and {"event_id": "evt-stale", "field": "customer_id"} in r["skipped"]
                for r in records(fleet)
            )
            or len(puts(fleet, 9700)) > 2
        ),
        what="the third event to be skipped (or sent)",
    )
    wait_drained(fleet)
    assert len(puts(fleet, 9700)) == 2, puts(fleet, 9700)[2:]
    assert applied(fleet)["evt-stale"] == 0
    assert_no_dead_letters(fleet)


def test_duplicates_are_applied_once(fleet: Pipeline) -> None:
    fleet.start_worker()
    duplicate = event(9710, 1, "evt-dup-1", customer_id=3)
    # Copies that arrive while the event waits for its turn are one pending event ...
    fleet.publish(duplicate, duplicate, duplicate)
    fleet.wait_applied(9710)
    # ... and copies that arrive after it was applied are recognised and dropped.
    fleet.publish(duplicate, duplicate)
    wait_for(
        lambda: sum(r["event"] == "event already handled" for r in fleet.log_records()) >= 2,
        what="both late copies to be recognised",
    )
    wait_drained(fleet)
    assert len(puts(fleet, 9710)) == 1
    assert applied(fleet)["evt-dup-1"] == 1


def test_two_workers_never_write_one_order_at_once_and_coalesce_a_burst(
    fleet: Pipeline,
) -> None:
    fleet.state.latency_ms = 100
    orders = [9720 + i for i in range(10)]
    # The broker deals events to the workers in turn: each minute's orders are rotated by one,
    # so that each worker is dealt events of every order, not every other order.
    burst = [
        event(order_id, minute, customer_id=minute)
        for minute in range(30)
        for order_id in orders[minute % 2 :] + orders[: minute % 2]
    ]

    def newest(minute: int) -> bool:
        return all((fleet.state.order(o) or {}).get("CustomerId") == minute for o in orders)

    # A backlog, as after an outage: the event reader runs ahead of the pool. The first worker
    # writes every order; a writer keeps an order's lock while its events keep coming, so...
    fleet.publish(*burst[:150])
    fleet.start_worker()
    wait_for(lambda: newest(14), timeout=60, what="the backlog to be applied")
    # ...the second worker takes some of the same orders from it when the next events come
    # and both are dealt events of every order.
    fleet.start_worker()
    fleet.publish(*burst[150:])
    wait_until_or_drained(fleet, lambda: newest(29), 60, "every order to hold its newest value")
    calls = puts(fleet)
    assert len(calls) <= 60, f"{len(calls)} PUTs for 300 events"
    by_order: dict[int, list[float]] = defaultdict(list)
    for call in calls:
        by_order[call["order_id"]].append(call["at"])
    for arrivals in by_order.values():
        gaps = [b - a for a, b in zip(sorted(arrivals), sorted(arrivals)[1:], strict=False)]
        # Each PUT takes 100 ms at the simulator: a smaller gap would mean two at once.
        assert all(gap >= 0.095 for gap in gaps), gaps
    assert newest(29), fleet.state.orders()
    # One writer per order is a promise between processes: it is only tested if both worker
    # processes wrote the same orders.
    both = applied_orders(fleet, 0) & applied_orders(fleet, 1)
    assert len(both) >= 2, (
        f"orders written by both workers: {sorted(both)}; by the first only: "
        f"{sorted(applied_orders(fleet, 0) - both)}, the second only: "
        f"{sorted(applied_orders(fleet, 1) - both)}"
    )
    # Every event ended once: in one PUT, or skipped as older than what its order holds.
    wait_drained(fleet)
    counts = applied(fleet)
    skipped = {s["event_id"] for r in records(fleet) for s in r.get("skipped", [])}
    assert [e for e, n in counts.items() if n > 1] == []
    assert [e["event_id"] for e in burst if e["event_id"] not in counts.keys() | skipped] == []
    assert_no_dead_letters(fleet)


def test_a_rejected_merged_put_dead_letters_every_event_in_it(fleet: Pipeline) -> None:
    fleet.state.script_order(9730, ["slow:1500", 400])
    fleet.start_worker()
    fleet.publish(event(9730, 1, "evt-first", customer_id=1))
    # The token call comes just before the first PUT, which then takes 1.5 s.
    wait_for(lambda: fleet.state.token_requests == 1, what="the first PUT to start")
    fleet.publish(
        event(9730, 2, "evt-second", sales_rep_1=2), event(9730, 3, "evt-third", company_id=3)
    )
    entries = fleet.wait_dead_letters(2)
    assert sorted(e["event_id"] for e in entries) == ["evt-second", "evt-third"]
    for entry in entries:
        assert entry["reason"] == "api_rejected"
        assert entry["request"]["body"] == {"SalesRep1": 2, "CompanyId": 3}
        assert len(entry["merged_with"]) == 1
    wait_drained(fleet)
    assert dead_letter_count(fleet) == 2
    assert applied(fleet) == {"evt-first": 1}


def both_workers_applied(fleet: Pipeline, orders: list[int]) -> None:
    """Both worker processes applied events of ``orders``: what they share was shared."""
    by_worker = [applied_orders(fleet, worker) & set(orders) for worker in (0, 1)]
    assert all(by_worker), f"orders applied by each worker: {by_worker}"


def test_the_fleet_shares_one_token(fleet: Pipeline) -> None:
    fleet.start_worker()
    fleet.start_worker()
    first = [9740 + i for i in range(20)]
    fleet.publish(*(event(o, 1) for o in first))
    fleet.wait_applied(*first)
    both_workers_applied(fleet, first)
    assert fleet.state.token_requests == 1, "token calls for two workers"
    fleet.state.expire_tokens()
    second = [9760 + i for i in range(20)]
    fleet.publish(*(event(o, 1) for o in second))
    fleet.wait_applied(*second)
    both_workers_applied(fleet, second)
    assert fleet.state.token_requests == 2, "token calls for two workers, then again"


def test_the_rate_limit_is_shared_and_never_exceeded(fleet: Pipeline) -> None:
    from worker.simulator.ratelimit import RateLimit

    fleet.state.rate_limit = RateLimit.parse("10/s")
    fleet.env_overrides["ORDER_SYNC_RATE_LIMIT"] = "10/s"
    fleet.start_worker()
    fleet.start_worker()
    orders = [9800 + i for i in range(40)]
    fleet.publish(*(event(o, 1) for o in orders))
    fleet.wait_applied(*orders, timeout=60)
    # The simulator keeps the limit as a sliding window and answers 429 to any call over it.
    calls = fleet.state.requests()
    timeline = " ".join(
        f"{r['at'] - calls[0]['at']:.3f}:{r['path'][-5:]}:{r['status']}" for r in calls
    )
    assert all(r["status"] != 429 for r in calls), f"over the limit (429): {timeline}"
    # Both processes made calls, so the limit they kept was one limit between them.
    both_workers_applied(fleet, orders)
    # How much of the limit the fleet uses is a benchmark (tests/benchmarks/bench_fleet.py),
    # not a test: a busy machine slows the workers down without breaking any promise.


def test_a_429_pauses_the_fleet_without_using_up_retries(fleet: Pipeline) -> None:
    fleet.env_overrides["ORDER_SYNC_MAX_RETRIES"] = "0"
    fleet.state.script_order(9850, [429, 429])
    fleet.start_worker()
    fleet.publish(event(9850, 1), event(9851, 1))
    fleet.wait_applied(9850, 9851, timeout=60)
    assert fleet.statuses(9850) == [429, 429, 200]
    assert_no_dead_letters(fleet)


def test_events_wait_while_redis_is_down_and_flow_when_it_returns(fleet: Pipeline) -> None:
    fleet.start_worker()
    fleet.publish(event(9900, 1))
    fleet.wait_applied(9900)
    with redis_down():
        fleet.publish(event(9901, 1), event(9902, 1))
        wait_for(
            lambda: any(
                r["event"].startswith("shared store unavailable") for r in fleet.log_records()
            ),
            what="the worker to notice",
        )
        assert fleet.state.order(9901) is None  # nothing is applied without the store
    fleet.wait_applied(9901, 9902, timeout=60)
    assert_no_dead_letters(fleet)
