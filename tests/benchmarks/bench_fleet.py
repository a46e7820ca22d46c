"""Benchmark: what a fleet of workers saves by coalescing, and how much of the rate limit it uses.

Two worker processes share Redis and RabbitMQ and talk to the simulator over HTTP:

    .venv/bin/python -m tests.benchmarks.bench_fleet

1. A burst of 300 events over 10 orders (the simulator answering in 50 ms): PUTs made.
2. A backlog of 200 events over 200 orders under a limit of 20 calls/s enforced by the
   simulator too: calls per second used, and 429s received.
3. The same for 40 events under 10 calls/s, as in the integration test of the shared limit,
   which checks only that the limit is kept; the share of it used is measured here (the
   limiter spaces calls at 90% of the limit, so about 9 calls/s is the most to expect).
Needs RabbitMQ and Redis on localhost and nothing else using them.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from tests.support import (
    PASSWORD,
    RABBITMQ_URL,
    USERNAME,
    Pipeline,
    make_event,
    reset_topology,
    wait_for,
)
from worker.simulator import SimulatorServer, SimulatorState
from worker.simulator.ratelimit import RateLimit

STATE_REDIS_URL = "redis://127.0.0.1:6379/11"


def fleet(tmp: Path, **env: str) -> tuple[Pipeline, SimulatorServer]:
    tmp.mkdir(parents=True, exist_ok=True)
    reset_topology(RABBITMQ_URL)
    redis.Redis.from_url(STATE_REDIS_URL).flushdb()
    simulator = SimulatorServer(state=SimulatorState(USERNAME, PASSWORD)).start()
    pipeline = Pipeline(RABBITMQ_URL, simulator, tmp)
    pipeline.env_overrides.update(ORDER_SYNC_REDIS_URL=STATE_REDIS_URL, **env)
    return pipeline, simulator


def coalescing(tmp: Path) -> dict[str, Any]:
    pipeline, simulator = fleet(tmp / "burst")
    simulator.state.latency_ms = 50
    try:
        pipeline.start_worker()
        pipeline.start_worker()
        orders = [20_000 + i for i in range(10)]
        events = []
        for minute in range(30):
            for order_id in orders:
                event = make_event(order_id, customer_id=minute)
                event["occurred_at"] = f"2026-11-26T10:{minute:02d}:00Z"
                events.append(event)
        started = time.perf_counter()
        pipeline.publish(*events)
        wait_for(
            lambda: all((simulator.state.order(o) or {}).get("CustomerId") == 29 for o in orders),
            timeout=120,
        )
        seconds = time.perf_counter() - started
        puts = simulator.state.put_requests
    finally:
        pipeline.stop_workers()
        simulator.stop()
    return {
        "events": len(events),
        "orders": len(orders),
        "puts": puts,
        "seconds": round(seconds, 2),
    }


def rate_use(tmp: Path, per_second: int = 20, events: int = 200) -> dict[str, Any]:
    limit = f"{per_second}/s"
    pipeline, simulator = fleet(tmp / f"rate-{per_second}", ORDER_SYNC_RATE_LIMIT=limit)
    simulator.state.rate_limit = RateLimit.parse(limit)
    try:
        pipeline.start_worker()
        pipeline.start_worker()
        orders = [30_000 + i for i in range(events)]
        pipeline.publish(*(make_event(o) for o in orders))
        pipeline.wait_applied(*orders, timeout=120)
        calls = simulator.state.requests()
    finally:
        pipeline.stop_workers()
        simulator.stop()
    arrivals = sorted(r["at"] for r in calls)
    used = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
    return {
        "limit_per_second": per_second,
        "events": events,
        "calls": len(calls),
        "used_per_second": round(used, 2),
        "utilisation": round(used / per_second, 3),
        "http_429": sum(r["status"] == 429 for r in calls),
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        report = {
            "coalescing": coalescing(tmp),
            "rate_limit": rate_use(tmp),
            "rate_limit_as_in_the_test": rate_use(tmp, per_second=10, events=40),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
