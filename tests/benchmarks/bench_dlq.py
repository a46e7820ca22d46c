"""Benchmark: dead-letter tooling at scale (not part of the test suite).

Seeds N dead-letter entries, then times the commands an operator runs, each as a separate
process, and reports wall time and the command's peak RSS:

    .venv/bin/python -m tests.benchmarks.bench_dlq --count 100000
    .venv/bin/python -m tests.benchmarks.bench_dlq --count 100000 --broker redis://127.0.0.1:6379/15

Needs the broker to be otherwise idle: it deletes and refills the dead-letter queue.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from typing import Any

from kombu import Connection, Producer

from worker.broker.connection import connect
from worker.broker.topology import DEAD_LETTER_QUEUE, EVENTS_QUEUE
from worker.deadletter import entries
from worker.deadletter import queue as dead_letters
from worker.settings import broker_settings

REASONS = ("api_rejected", "invalid_event", "retries_exhausted", "order_not_found")


def seed(connection: Connection, count: int) -> float:
    started = time.perf_counter()
    producer = Producer(connection)
    for i in range(count):
        reason = REASONS[i % len(REASONS)]
        event = {
            "event_id": f"bench-{i}",
            "order_id": 100_000 + i,
            "occurred_at": "2026-11-26T10:00:00Z",
            "changes": {"customer_id": i % 5000, "order_source": "Amazon"},
        }
        dead_letters.publish(
            producer,
            entries.new_entry(
                reason=reason,
                error=f"Update Order {100_000 + i}: HTTP 400",
                attempts=1,
                event=event,
                event_id=event["event_id"],
                order_id=event["order_id"],
                status_code=400,
                response_body={"Message": "The request is invalid."},
            ),
        )
    return time.perf_counter() - started


def run(env: dict[str, str], *args: str) -> dict[str, Any]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "worker.cli", "dlq", *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        stdin=subprocess.DEVNULL,
    )
    elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "command": "order-sync dlq " + " ".join(args),
        "seconds": round(elapsed, 2),
        # ru_maxrss is the largest child so far; commands run in order of growing footprint.
        "peak_rss_mib": round(max(peak, before) / 1024, 1),
        "stdout_lines": len(result.stdout.splitlines()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672//")
    options = parser.parse_args()
    env = dict(os.environ, CELERY_BROKER_URL=options.broker, ORDER_SYNC_LOG_LEVEL="WARNING")
    settings = broker_settings(env)
    with connect(settings) as connection:
        channel = connection.channel()
        for queue in (DEAD_LETTER_QUEUE, EVENTS_QUEUE):
            queue(channel).declare()
            queue(channel).purge()
        seconds = seed(connection, options.count)
    print(f"seeded {options.count} entries in {seconds:.1f}s", file=sys.stderr)

    results = [
        run(env, "summary", "--json"),
        run(env, "list", "--json", "--order-id", str(100_000 + options.count // 2)),
        run(env, "list", "--json", "--reason", "order_not_found", "--limit", "100"),
    ]
    replay = run(env, "replay", "--all", "--json")
    replay["entries_per_second"] = round(options.count / replay["seconds"])
    results.append(replay)
    report = {
        "entries": options.count,
        "broker": options.broker.split("@")[-1],
        "machine": (
            f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        ),
        "results": results,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
