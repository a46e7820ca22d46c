"""Benchmark: how fast a backlog in the outbox drains into the broker (not part of the suite).

Seeds N rows into PostgreSQL with COPY, then times ``run_until_empty()`` (passes of
``--batch`` rows, each batch published on a confirm-mode channel and confirmed as a whole) and
reports rows per second:

    .venv/bin/python -m tests.benchmarks.bench_outbox --count 50000
    .venv/bin/python -m tests.benchmarks.bench_outbox --broker amqp://guest:guest@127.0.0.1:5672/x

Needs the database and the broker's events queue to itself: it recreates the table and purges
``order-sync.events`` before and after.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from typing import Any

import psycopg
from sqlalchemy import Engine, func, select
from sqlalchemy.engine import make_url

from worker.broker.connection import connect
from worker.broker.topology import EVENTS_QUEUE
from worker.outbox import db
from worker.outbox.poller import run_until_empty
from worker.outbox.sink import EventSink
from worker.outbox.table import outbox
from worker.settings import BrokerSettings, OutboxSettings

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/order_sync_bench"


def create_database(url: str) -> None:
    parts = make_url(url)
    with psycopg.connect(
        host=parts.host, port=parts.port, user=parts.username, dbname="postgres", autocommit=True
    ) as admin:
        if not admin.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (parts.database,)
        ).fetchone():
            admin.execute(f'CREATE DATABASE "{parts.database}"')


def seed(engine: Engine, count: int) -> float:
    """COPY ``count`` rows, as a busy upstream would have left them."""
    started = time.perf_counter()
    occurred = dt.datetime.now(dt.UTC).isoformat()
    raw = engine.raw_connection()
    try:
        cursor = raw.driver_connection.cursor()  # type: ignore[union-attr]
        columns = "event_id, order_id, occurred_at, changes"
        with cursor.copy(f"COPY order_sync_outbox ({columns}) FROM STDIN") as copy:
            for i in range(count):
                changes = {"customer_id": i % 5000, "order_source": "Amazon"}
                copy.write_row((f"bench-{i}", 100_000 + i, occurred, json.dumps(changes)))
        raw.commit()
    finally:
        raw.close()
    return time.perf_counter() - started


def depth(broker: BrokerSettings, purge: bool = False) -> int:
    with connect(broker) as connection:
        queue: Any = EVENTS_QUEUE(connection.channel())
        queue.declare()
        waiting = int(queue.queue_declare().message_count)
        if purge:
            queue.purge()
        return waiting


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--url", default=DEFAULT_URL, help="PostgreSQL (SQLAlchemy URL)")
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672//")
    options = parser.parse_args()

    create_database(options.url)
    engine = db.outbox_engine(
        OutboxSettings(url=options.url, interval=2, batch=options.batch, retention_days=7)
    )
    db.downgrade(engine)
    db.upgrade(engine)
    broker = BrokerSettings(url=options.broker, embedded_dir=None)
    depth(broker, purge=True)
    seconds = seed(engine, options.count)
    print(f"seeded {options.count} rows in {seconds:.1f}s", file=sys.stderr)

    with EventSink(broker) as sink:
        started = time.perf_counter()
        result = run_until_empty(engine, sink, options.batch)
        elapsed = time.perf_counter() - started
    with engine.connect() as connection:
        pending = connection.execute(
            select(func.count()).where(outbox.c.published_at.is_(None))
        ).scalar_one()
    queued = depth(broker, purge=True)
    engine.dispose()
    report = {
        "rows": options.count,
        "batch": options.batch,
        "broker": options.broker.split("@")[-1],
        "seconds": round(elapsed, 2),
        "rows_per_second": round(result.published / elapsed),
        "published": result.published,
        "pending_after": pending,
        "events_in_queue": queued,
        "error": result.error,
        "machine": (
            f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        ),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
