"""Benchmark: the operator console's pages with many dead letters (not part of the test suite).

Seeds N dead-letter entries (in 40 error groups) and two history records per entry into a fresh
database, builds the console exactly as ``order-sync console`` does (``Backend.from_settings``,
``create_app``), and times each page through the whole WSGI stack (routing, database queries,
templates), the median and the slowest of several loads, and the page's size:

    .venv/bin/python -m tests.benchmarks.bench_console --count 100000
    .venv/bin/python -m tests.benchmarks.bench_console --count 100000 \
        --database postgresql+psycopg://postgres@127.0.0.1:5432/order_sync_bench_console

The broker is the embedded one in a temporary folder unless ``CELERY_BROKER_URL`` is set (the
overview reads queue depths from it). The database has its tables dropped and created again.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import sys
import tempfile
import time
from typing import Any

from worker.deadletter import entries

REASONS = ("api_rejected", "invalid_event", "retries_exhausted", "order_not_found")
GROUPS = 40
FIRST_ORDER = 100_000


def make_entry(i: int, start: dt.datetime) -> dict[str, Any]:
    order_id = FIRST_ORDER + i
    event = {
        "event_id": f"bench-{i}",
        "order_id": order_id,
        "occurred_at": "2026-11-26T10:00:00Z",
        "changes": {"customer_id": i % 5000, "order_source": "Amazon"},
    }
    entry = entries.new_entry(
        reason=REASONS[i % len(REASONS)],
        # One failure mode per group; the order id is blanked out of the group's text.
        error=f"Update Order {order_id}: HTTP 400 (rule {i % GROUPS})",
        attempts=1,
        event=event,
        event_id=event["event_id"],
        order_id=order_id,
        status_code=400,
        response_body={"Message": "The request is invalid."},
    )
    entry["dead_lettered_at"] = (start + dt.timedelta(seconds=i)).isoformat().replace("+00:00", "Z")
    return entry


def seed(url: str, count: int) -> float:
    from worker.deadletter.store import DeadLetterDB
    from worker.deadletter.store import engine as engines
    from worker.history.kinds import DEAD_LETTERED, RECEIVED
    from worker.history.recorder import HistoryRecorder

    started = time.perf_counter()
    engine = engines.create(url)
    engines.upgrade(engine)
    engines.downgrade(engine)
    engines.upgrade(engine)
    start = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=count + 60)
    with DeadLetterDB(engine) as db:
        for first in range(0, count, 5000):
            batch = [make_entry(i, start) for i in range(first, min(count, first + 5000))]
            db.ingest_many(batch)
    recorder = HistoryRecorder(engines.create(url))
    for i in range(count):
        at = start + dt.timedelta(seconds=i)
        order_id, event_id = FIRST_ORDER + i, f"bench-{i}"
        recorder.record(RECEIVED, order_id=order_id, event_id=event_id, at=at)
        recorder.record(
            DEAD_LETTERED, order_id=order_id, event_id=event_id, at=at, reason="api_rejected"
        )
        if i % 20000 == 0:
            recorder.flush()
    recorder.close()
    return time.perf_counter() - started


def measure(client: Any, path: str, repeat: int) -> dict[str, Any]:
    times = []
    size = 0
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(path, headers={"Host": "127.0.0.1"})
        times.append(time.perf_counter() - started)
        if response.status_code != 200:
            raise RuntimeError(f"{path}: HTTP {response.status_code}")
        size = len(response.data)
    times.sort()
    return {
        "page": path,
        "median_ms": round(times[len(times) // 2] * 1000, 1),
        "max_ms": round(times[-1] * 1000, 1),
        "kib": round(size / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--database", help="SQLAlchemy URL (default: a fresh SQLite file)")
    args = parser.parse_args()

    folder = tempfile.mkdtemp(prefix="bench-console-")
    os.environ["ORDER_SYNC_DATA_DIR"] = folder
    url = args.database or f"sqlite:///{folder}/order-sync.sqlite3"
    os.environ["ORDER_SYNC_DATABASE_URL"] = url
    seeded = seed(url, args.count)

    from worker.console.app import ConsoleConfig, create_app
    from worker.console.backend import Backend

    backend = Backend.from_settings()
    app = create_app(ConsoleConfig(secret_key=os.urandom(32)), backend)
    client = app.test_client()
    listing = client.get("/dead-letters/list", headers={"Host": "127.0.0.1"}).data.decode()
    entry_id = re.search(r'href="/dead-letters/([0-9a-f]{32})"', listing)
    groups = client.get("/dead-letters/", headers={"Host": "127.0.0.1"}).data.decode()
    group = re.search(r'href="/dead-letters/list\?group=([0-9a-f]+)"', groups)
    if entry_id is None or group is None:
        raise RuntimeError("the seeded entries are not listed")
    middle = FIRST_ORDER + args.count // 2
    pages = [
        "/",
        "/dead-letters/",
        "/dead-letters/list",
        f"/dead-letters/list?offset={args.count - 100}&limit=100",
        f"/dead-letters/list?group={group.group(1)}",
        f"/dead-letters/list?group={group.group(1)}&offset={args.count // GROUPS - 50}",
        f"/dead-letters/list?order_id={middle}",
        "/dead-letters/list?error_contains=rule+7%29",
        f"/dead-letters/{entry_id.group(1)}",
        f"/orders/?order_id={middle}",
        f"/orders/?event_id=bench-{args.count // 2}",
    ]
    results = [measure(client, page, args.repeat) for page in pages]
    backend.close()
    report = {
        "count": args.count,
        "database": url.split(":", 1)[0],
        "seed_seconds": round(seeded, 1),
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "pages": results,
    }
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
