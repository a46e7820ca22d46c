"""Order history: the recorder on SQLite and PostgreSQL, retention, and ``order-sync trace``."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from collections import Counter

import pytest

from tests.integration.dlq_database import database_url, postgres_url
from tests.support import Pipeline
from worker.deadletter.store import engine as engines
from worker.history import kinds
from worker.history.reader import trace
from worker.history.recorder import HistoryRecorder
from worker.settings import database_settings

pytestmark = pytest.mark.integration
__all__ = ["database_url", "postgres_url"]  # fixtures

T0 = dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def record_a_story(recorder: HistoryRecorder) -> None:
    """Two events of order 5001 (one retried, both applied in one PUT), a stale and a duplicate
    one, and an event of another order dead-lettered; recorded out of time order."""
    r = recorder.record
    r(kinds.APPLIED, order_id=5001, event_id="e1", at=at(5), put_id="p1", fields=["CustomerId"],
      status_code=200, events=["e1", "e2"])  # fmt: skip
    r(kinds.RECEIVED, order_id=5001, event_id="e1", at=at(0))
    r(kinds.RETRIED, order_id=5001, event_id="e1", at=at(1), reason="api_unavailable",
      attempt=1, wait=0.5)  # fmt: skip
    r(kinds.RECEIVED, order_id=5001, event_id="e2", at=at(2))
    r(kinds.APPLIED, order_id=5001, event_id="e2", at=at(5), put_id="p1", fields=["CustomerId"],
      status_code=200, events=["e1", "e2"])  # fmt: skip
    r(kinds.STALE, order_id=5001, event_id="e3", at=at(6), fields=["CustomerId"])
    r(kinds.DUPLICATE, order_id=5001, event_id="e1", at=at(7))
    r(kinds.DEAD_LETTERED, order_id=5002, event_id="e9", at=at(3), reason="api_rejected",
      dead_letter_id="d1")  # fmt: skip


def test_the_recorder_writes_in_the_background_and_trace_reads_in_time_order(
    database_url: str,
) -> None:
    engine = engines.create(database_url)
    engines.upgrade(engine)
    recorder = HistoryRecorder(engine, retention_days=7)
    record_a_story(recorder)
    # Nothing flushed by hand: the recorder's thread writes within its flush interval.
    reader = engines.create(database_url)
    deadline = time.monotonic() + 30
    while len(trace(reader, order_id=5001)) < 7:
        assert time.monotonic() < deadline, "the recorder wrote nothing"
        time.sleep(0.1)
    order = trace(reader, order_id=5001)
    assert [(r["kind"], r["event_id"]) for r in order] == [
        ("received", "e1"),
        ("retried", "e1"),
        ("received", "e2"),
        ("applied", "e1"),
        ("applied", "e2"),
        ("stale", "e3"),
        ("duplicate", "e1"),
    ]
    assert order[3]["put_id"] == order[4]["put_id"] == "p1"
    assert order[3]["events"] == ["e1", "e2"] and order[3]["status_code"] == 200
    assert (order[1]["reason"], order[1]["attempt"], order[1]["wait"]) == (
        "api_unavailable",
        1,
        0.5,
    )
    assert [r["kind"] for r in trace(reader, event_id="e1")] == [
        "received",
        "retried",
        "applied",
        "duplicate",
    ]
    [dead] = trace(reader, order_id=5002)
    assert (dead["kind"], dead["dead_letter_id"], dead["at"]) == (
        "dead_lettered",
        "d1",
        "2026-12-01T10:00:03.000Z",
    )

    # Retention: records older than 7 days go, the rest stay.
    assert recorder.expire(T0 + dt.timedelta(days=7, seconds=3.5)) == 4
    assert Counter(r["kind"] for r in trace(reader, order_id=5001)) == Counter(
        {"applied": 2, "stale": 1, "duplicate": 1}
    )
    with pytest.raises(ValueError, match="unknown history kind"):
        recorder.record("exploded", order_id=1, event_id="x")
    recorder.close()
    reader.dispose()


def test_recording_never_waits_for_an_unreachable_database() -> None:
    # A port nobody listens on: every write fails, and record() still returns at once.
    engine = engines.create("postgresql+psycopg://postgres@127.0.0.1:9/none")
    recorder = HistoryRecorder(engine)
    started = time.thread_time()
    for i in range(10_000):
        recorder.record(kinds.RECEIVED, order_id=i, event_id=f"e{i}")
    spent = time.thread_time() - started
    assert spent < 5.0  # CPU of this thread only: about 10 µs a record, whatever the database
    recorder.close()  # logs the records it could not write; does not raise


def trace_command(pipeline: Pipeline, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", "trace", *args],
        env=pipeline.env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_order_sync_trace_prints_an_order_or_an_event(pipeline: Pipeline) -> None:
    engine = engines.create(database_settings(pipeline.env).url)
    engines.upgrade(engine)
    recorder = HistoryRecorder(engine)
    record_a_story(recorder)
    recorder.close()

    as_json = trace_command(pipeline, "--order", "5001", "--json")
    assert as_json.returncode == 0, as_json.stderr
    records = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [r["kind"] for r in records] == [
        "received",
        "retried",
        "received",
        "applied",
        "applied",
        "stale",
        "duplicate",
    ]
    table = trace_command(pipeline, "--event", "e9")
    assert "dead_lettered" in table.stdout and '"d1"' in table.stdout
    assert trace_command(pipeline, "--order", "999").returncode == 1
    assert trace_command(pipeline).returncode == 2
