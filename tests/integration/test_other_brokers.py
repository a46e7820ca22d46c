"""The same pipeline on the embedded on-disk broker (the default) and on Redis."""

from __future__ import annotations

import pytest

from tests.support import Pipeline, make_event

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("pipeline", ["embedded", "redis"], indirect=True)
def test_applied_retried_and_dead_lettered(pipeline: Pipeline) -> None:
    pipeline.state.script_order(8002, [500])
    pipeline.state.script_order(8003, [400])
    pipeline.publish(make_event(8001), make_event(8002), make_event(8003))
    pipeline.publish_raw("not json")
    pipeline.start_worker()
    pipeline.wait_applied(8001, 8002)
    entries = pipeline.wait_dead_letters(2)
    assert sorted(e["reason"] for e in entries) == ["api_rejected", "invalid_json"]
    assert pipeline.statuses(8002) == [500, 200]
    # Listing does not consume: the entries are still there.
    assert len(pipeline.dead_letters()) == 2


@pytest.mark.parametrize("pipeline", ["embedded"], indirect=True)
def test_the_embedded_broker_warns_that_it_is_for_one_machine(pipeline: Pipeline) -> None:
    pipeline.start_worker()
    warning = next(r for r in pipeline.log_records() if "embedded on-disk broker" in r["event"])
    assert warning["level"] == "warning"
    assert warning["path"].startswith(str(pipeline.tmp_path))
