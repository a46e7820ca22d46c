"""Benchmark: what recording order history costs a worker (not part of the test suite).

Records N history records through ``HistoryRecorder`` as the apply path would (a received
and an applied record per event, with a PUT's details), from 16 threads, and reports:

- the CPU each ``record()`` call costs the calling thread (what a task pays inline);
- the CPU the whole process spent per record, the background writer included (what the worker
  pays in all, since the writer shares its interpreter);
- how many records per second reached the database.

The worker spends about 3.5 ms of CPU per event, so the 10% budget is 350 µs per event:

    .venv/bin/python -m tests.benchmarks.bench_history --records 200000
    .venv/bin/python -m tests.benchmarks.bench_history --records 200000 \\
        --database postgresql+psycopg://postgres@127.0.0.1:5432/order_sync_bench
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import threading
import time
from typing import Any

from sqlalchemy import func, select

from worker.deadletter.store import engine as engines
from worker.deadletter.store.tables import history
from worker.history import kinds
from worker.history.recorder import HistoryRecorder

THREADS = 16
WORKER_CPU_PER_EVENT_MS = 3.5
RECORDS_PER_EVENT = 2  # received and applied; retries, stale and duplicates add a few


def record_events(recorder: HistoryRecorder, first: int, events: int, spent: list[float]) -> None:
    started = time.thread_time()
    for i in range(first, first + events):
        event_id = f"bench-{i}"
        recorder.record(kinds.RECEIVED, order_id=100_000 + i % 5000, event_id=event_id)
        recorder.record(
            kinds.APPLIED,
            order_id=100_000 + i % 5000,
            event_id=event_id,
            put_id=f"put-{i // 3}",
            fields=["CustomerId", "OrderSource", "ShippingAddress"],
            status_code=200,
            events=[event_id],
        )
    spent.append(time.thread_time() - started)


def measure(url: str, records: int) -> dict[str, Any]:
    engine = engines.create(url)
    if not engines.is_sqlite(engine):
        engines.downgrade(engine)
    engines.upgrade(engine)
    recorder = HistoryRecorder(engine)
    events = records // RECORDS_PER_EVENT
    per_thread = events // THREADS
    spent: list[float] = []
    cpu_before, wall_before = time.process_time(), time.perf_counter()
    threads = [
        threading.Thread(target=record_events, args=(recorder, n * per_thread, per_thread, spent))
        for n in range(THREADS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    recorded_after = time.perf_counter() - wall_before
    total = per_thread * THREADS * RECORDS_PER_EVENT
    with engines.readonly(engine).connect() as connection:
        while connection.execute(select(func.count()).select_from(history)).scalar_one() < total:
            time.sleep(0.05)
            connection.rollback()
    wall = time.perf_counter() - wall_before
    cpu = time.process_time() - cpu_before
    recorder.close()
    inline_us = sum(spent) / total * 1e6
    process_us = cpu / total * 1e6
    per_event_us = process_us * RECORDS_PER_EVENT
    return {
        "database": url.rsplit("@", maxsplit=1)[-1],
        "records": total,
        "record_call_cpu_us": round(inline_us, 1),
        "process_cpu_per_record_us": round(process_us, 1),
        "process_cpu_per_event_us": round(per_event_us, 1),
        "share_of_worker_cpu_per_event": f"{per_event_us / (WORKER_CPU_PER_EVENT_MS * 10):.1f}%",
        "records_per_second_written": round(total / wall),
        "seconds_to_record": round(recorded_after, 2),
        "seconds_until_written": round(wall, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--database", action="append", help="SQLAlchemy URL (repeatable)")
    options = parser.parse_args()
    urls = options.database or [f"sqlite:///{tempfile.mkdtemp()}/history.sqlite3"]
    report = {
        "machine": (
            f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        ),
        "threads": THREADS,
        "results": [measure(url, options.records) for url in urls],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
