"""``worker.history.current()``: one recorder per process, built on first use, on the
configured database (a SQLite file in the data directory here)."""

from __future__ import annotations

from pathlib import Path

import pytest

import worker.history
from worker.history import current, kinds
from worker.history.reader import trace


def test_one_recorder_per_process_on_the_configured_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ORDER_SYNC_DATABASE_URL", raising=False)
    monkeypatch.setenv("ORDER_SYNC_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(worker.history, "_current", None)
    first = current()
    assert current() is first
    first.record(kinds.RECEIVED, order_id=5001, event_id="e1")
    first.record(kinds.APPLIED, order_id=5001, event_id="e1", put_id="p1", status_code=200)
    first.flush()  # or the recorder's own thread has written them already
    assert [r["kind"] for r in trace(first.engine, order_id=5001)] == ["received", "applied"]
    assert (tmp_path / "order-sync.sqlite3").exists()
    first.close()
