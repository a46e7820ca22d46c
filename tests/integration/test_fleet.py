"""A fleet of worker processes sharing Redis: ordering, de-duplication, coalescing, one token,
one rate limit, 429 pauses and a Redis restart."""

from __future__ import annotations

from collections import defaultdict

import pytest

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
    # An event with nothing newer left to say costs no call at all.
    fleet.publish(event(9700, 5, customer_id=0))
    stale = wait_for(
        lambda: [r for r in fleet.log_records() if r["event"] == "stale fields skipped"],
        what="the stale-field log line",
    )
    assert stale[-1]["skipped"][0]["field"] == "customer_id"
    assert len(puts(fleet, 9700)) == 2


def test_duplicates_are_applied_once(fleet: Pipeline) -> None:
    fleet.start_worker()
    duplicate = event(9710, 1, "evt-dup-1", customer_id=3)
    fleet.publish(duplicate, duplicate, duplicate)
    fleet.wait_applied(9710)
    wait_for(
        lambda: sum(r["event"] == "event already handled" for r in fleet.log_records()) >= 2,
        what="both copies to be recognised",
    )
    assert len(puts(fleet, 9710)) == 1


def test_two_workers_never_write_one_order_at_once_and_coalesce_a_burst(
    fleet: Pipeline,
) -> None:
    fleet.state.latency_ms = 100
    orders = [9720 + i for i in range(10)]
    burst = [
        event(order_id, minute % 60, customer_id=minute)
        for minute in range(30)
        for order_id in orders
    ]
    # A backlog, as after an outage: the workers' event readers run ahead of their pools.
    fleet.publish(*burst)
    fleet.start_worker()
    fleet.start_worker()
    wait_for(
        lambda: all((fleet.state.order(o) or {}).get("CustomerId") == 29 for o in orders),
        timeout=90,
        what="every order to hold its newest value",
    )
    calls = puts(fleet)
    assert len(calls) <= 60, f"{len(calls)} PUTs for 300 events"
    by_order: dict[int, list[float]] = defaultdict(list)
    for call in calls:
        by_order[call["order_id"]].append(call["at"])
    for arrivals in by_order.values():
        gaps = [b - a for a, b in zip(sorted(arrivals), sorted(arrivals)[1:], strict=False)]
        # Each PUT takes 100 ms at the simulator: a smaller gap would mean two at once.
        assert all(gap >= 0.095 for gap in gaps), gaps
    assert fleet.dead_letters() == []


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


def test_the_fleet_shares_one_token(fleet: Pipeline) -> None:
    fleet.start_worker()
    fleet.start_worker()
    fleet.publish(*(event(9740 + i, 1) for i in range(20)))
    fleet.wait_applied(*(9740 + i for i in range(20)))
    assert fleet.state.token_requests == 1
    fleet.state.expire_tokens()
    fleet.publish(*(event(9760 + i, 1) for i in range(20)))
    fleet.wait_applied(*(9760 + i for i in range(20)))
    assert fleet.state.token_requests == 2


def test_the_rate_limit_is_shared_used_and_never_exceeded(fleet: Pipeline) -> None:
    from worker.simulator.ratelimit import RateLimit

    fleet.state.rate_limit = RateLimit.parse("10/s")
    fleet.env_overrides["ORDER_SYNC_RATE_LIMIT"] = "10/s"
    fleet.start_worker()
    fleet.start_worker()
    orders = [9800 + i for i in range(40)]
    fleet.publish(*(event(o, 1) for o in orders))
    fleet.wait_applied(*orders, timeout=60)
    calls = fleet.state.requests()
    timeline = " ".join(
        f"{r['at'] - calls[0]['at']:.3f}:{r['path'][-5:]}:{r['status']}" for r in calls
    )
    assert all(r["status"] != 429 for r in calls), timeline
    arrivals = sorted(r["at"] for r in calls)
    used = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
    assert used >= 8.0, f"{used:.2f} calls/s of 10/s allowed"


def test_a_429_pauses_the_fleet_without_using_up_retries(fleet: Pipeline) -> None:
    fleet.env_overrides["ORDER_SYNC_MAX_RETRIES"] = "0"
    fleet.state.script_order(9850, [429, 429])
    fleet.start_worker()
    fleet.publish(event(9850, 1), event(9851, 1))
    fleet.wait_applied(9850, 9851, timeout=60)
    assert fleet.statuses(9850) == [429, 429, 200]
    assert fleet.dead_letters() == []


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
    assert fleet.dead_letters() == []
