"""Benchmark: dead-letter tooling at scale (not part of the test suite).

Seeds N dead-letter entries into the dead-letter queue (or, with ``--direct``, straight into
the database), then times the commands an operator runs, each as a separate process (the first
one moves the queue into the database), and reports wall time and the command's peak RSS; then
the same reads in one process, as the console makes them (``DeadLetterDB`` calls, no Python
start-up):

    .venv/bin/python -m tests.benchmarks.bench_dlq --count 100000
    .venv/bin/python -m tests.benchmarks.bench_dlq --count 100000 \
        --database postgresql+psycopg://postgres@127.0.0.1:5432/order_sync_bench
    .venv/bin/python -m tests.benchmarks.bench_dlq --count 100000 --direct --replay

Needs the broker to be otherwise idle: it deletes and refills the dead-letter queue. The
database (a fresh SQLite file by default) has its tables dropped and created again.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from kombu import Connection, Producer

from worker.broker.connection import connect
from worker.broker.topology import DEAD_LETTER_QUEUE, EVENTS_QUEUE
from worker.deadletter import entries
from worker.deadletter import queue as dead_letters
from worker.deadletter.selection import Selection
from worker.deadletter.store import DeadLetterDB
from worker.deadletter.store import engine as engines
from worker.settings import broker_settings

REASONS = ("api_rejected", "invalid_event", "retries_exhausted", "order_not_found")


def make_entry(i: int) -> dict[str, Any]:
    event = {
        "event_id": f"bench-{i}",
        "order_id": 100_000 + i,
        "occurred_at": "2026-11-26T10:00:00Z",
        "changes": {"customer_id": i % 5000, "order_source": "Amazon"},
    }
    return entries.new_entry(
        reason=REASONS[i % len(REASONS)],
        error=f"Update Order {100_000 + i}: HTTP 400",
        attempts=1,
        event=event,
        event_id=event["event_id"],
        order_id=event["order_id"],
        status_code=400,
        response_body={"Message": "The request is invalid."},
    )


def seed(connection: Connection, count: int) -> float:
    started = time.perf_counter()
    producer = Producer(connection)
    for i in range(count):
        dead_letters.publish(producer, make_entry(i))
    return time.perf_counter() - started


def seed_database(url: str, count: int) -> float:
    started = time.perf_counter()
    with DeadLetterDB.open(url) as db:
        for first in range(0, count, 5000):
            db.ingest_many(make_entry(i) for i in range(first, min(count, first + 5000)))
    return time.perf_counter() - started


def timed(what: str, call: Callable[[], Any], repeat: int = 5) -> dict[str, Any]:
    """The median of ``repeat`` calls, in milliseconds."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - started)
    return {"call": what, "ms": round(sorted(times)[len(times) // 2] * 1000, 1), "result": result}


def in_process(url: str, count: int) -> list[dict[str, Any]]:
    middle = 100_000 + count // 2
    with DeadLetterDB.open(url) as db:
        return [
            timed("summary()", lambda: db.summary().total),
            timed(
                "page(order_ids={middle})",
                lambda: db.page(Selection(order_ids=frozenset({middle})))[1],
            ),
            timed(
                "page(reasons={order_not_found}, limit=100)",
                lambda: db.page(Selection(reasons=frozenset({"order_not_found"})), limit=100)[1],
            ),
            timed("page(offset=50000, limit=50)", lambda: db.page(offset=50_000, limit=50)[1]),
            timed(
                "page(error_contains='order 150000')",
                lambda: db.page(Selection(error_contains="order 150000"))[1],
            ),
            timed(
                "summary(reasons={invalid_event})",
                lambda: db.summary(Selection(reasons=frozenset({"invalid_event"}))).total,
            ),
            timed("count()", db.count),
        ]


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
    parser.add_argument("--database", help="SQLAlchemy URL (default: a new SQLite file)")
    parser.add_argument("--direct", action="store_true", help="Seed the database, not the queue.")
    parser.add_argument("--replay", action="store_true", help="Also time replay --all.")
    options = parser.parse_args()
    database = options.database or f"sqlite:///{tempfile.mkdtemp()}/bench.sqlite3"
    env = dict(
        os.environ,
        CELERY_BROKER_URL=options.broker,
        ORDER_SYNC_LOG_LEVEL="WARNING",
        ORDER_SYNC_DATABASE_URL=database,
    )
    engine = engines.create(database)
    if not engines.is_sqlite(engine):
        engines.downgrade(engine)
    engines.upgrade(engine)
    engine.dispose()
    settings = broker_settings(env)
    with connect(settings) as connection:
        channel = connection.channel()
        for queue in (DEAD_LETTER_QUEUE, EVENTS_QUEUE):
            queue(channel).declare()
            queue(channel).purge()
        if not options.direct:
            seconds = seed(connection, options.count)
    if options.direct:
        seconds = seed_database(database, options.count)
    where = "database" if options.direct else "dead-letter queue"
    print(f"seeded {options.count} entries into the {where} in {seconds:.1f}s", file=sys.stderr)

    results = []
    if not options.direct:
        moved = run(env, "list", "--json", "--limit", "1")
        moved["what"] = "moves every entry from the queue into the database, then lists one"
        moved["entries_per_second"] = round(options.count / moved["seconds"])
        results.append(moved)
    results += [
        run(env, "summary", "--json"),
        run(env, "list", "--json", "--order-id", str(100_000 + options.count // 2)),
        run(env, "list", "--json", "--reason", "order_not_found", "--limit", "100"),
        run(env, "list", "--json", "--error-contains", "order 150000"),
    ]
    calls = in_process(database, options.count)
    if options.replay:
        replay = run(env, "replay", "--all", "--json")
        replay["entries_per_second"] = round(options.count / replay["seconds"])
        results.append(replay)
    report = {
        "entries": options.count,
        "broker": options.broker.split("@")[-1],
        "database": database.split("@")[-1],
        "machine": (
            f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        ),
        "commands": results,
        "calls_in_one_process": calls,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
