"""The same pipeline on the embedded on-disk broker (the default) and on Redis."""

from __future__ import annotations

import pytest

from tests.integration.conftest import Pipeline, make_event

pytestmark = pytest.mark.integration


@pytest.fixture(params=["embedded", "redis"])
def pipeline(request: pytest.FixtureRequest) -> Pipeline:
    name = "embedded_pipeline" if request.param == "embedded" else "redis_pipeline"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


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


def test_the_embedded_broker_warns_that_it_is_for_one_machine(
    embedded_pipeline: Pipeline,
) -> None:
    embedded_pipeline.start_worker()
    warning = next(
        r for r in embedded_pipeline.log_records() if "embedded on-disk broker" in r["event"]
    )
    assert warning["level"] == "warning"
    assert warning["path"].startswith(str(embedded_pipeline.tmp_path))


def test_a_worker_killed_on_redis_loses_nothing(redis_pipeline: Pipeline) -> None:
    import signal

    redis_pipeline.env_overrides["ORDER_SYNC_REDIS_VISIBILITY_TIMEOUT"] = "2"
    redis_pipeline.state.latency_ms = 300
    orders = [8100 + i for i in range(12)]
    redis_pipeline.publish(*(make_event(o) for o in orders))
    first = redis_pipeline.start_worker()
    from tests.integration.conftest import wait_for

    wait_for(lambda: len(redis_pipeline.state.orders()) >= 2, what="the first PUTs")
    first.send_signal(signal.SIGKILL)
    first.wait()
    redis_pipeline.state.latency_ms = 0
    redis_pipeline.start_worker()
    redis_pipeline.wait_applied(*orders, timeout=60)


def test_a_worker_killed_on_the_embedded_broker_loses_nothing(
    embedded_pipeline: Pipeline,
) -> None:
    import signal

    from tests.integration.conftest import wait_for

    embedded_pipeline.state.latency_ms = 300
    orders = [8200 + i for i in range(12)]
    embedded_pipeline.publish(*(make_event(o) for o in orders))
    first = embedded_pipeline.start_worker()
    wait_for(lambda: len(embedded_pipeline.state.orders()) >= 2, what="the first PUTs")
    first.send_signal(signal.SIGKILL)
    first.wait()
    inflight = embedded_pipeline.tmp_path / "data" / "broker" / "inflight" / str(first.pid)
    assert any(inflight.iterdir()), "the killed worker held messages it had not acked"
    embedded_pipeline.state.latency_ms = 0
    embedded_pipeline.start_worker()
    embedded_pipeline.wait_applied(*orders, timeout=60)
    assert embedded_pipeline.dead_letters() == []
