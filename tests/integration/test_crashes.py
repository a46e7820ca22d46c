"""Nothing lost through a worker killed mid-task or a broker restarted while events flow."""

from __future__ import annotations

import signal

import pytest

from tests.support import Pipeline, make_event, restart_rabbitmq, wait_for

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("pipeline", ["rabbitmq", "redis", "embedded"], indirect=True)
def test_a_worker_killed_mid_task_loses_nothing(pipeline: Pipeline) -> None:
    # Redis hands out a dead worker's messages after the visibility timeout, and the dead
    # worker's order locks run out after their lifetime: keep both short here.
    pipeline.env_overrides["ORDER_SYNC_REDIS_VISIBILITY_TIMEOUT"] = "2"
    pipeline.env_overrides["ORDER_SYNC_ORDER_LOCK_TTL"] = "3"
    pipeline.state.latency_ms = 300
    orders = [7000 + i for i in range(16)]
    pipeline.publish(*(make_event(order_id) for order_id in orders))
    first = pipeline.start_worker()
    # Some PUTs answered, more in flight, the rest prefetched or still queued.
    wait_for(lambda: len(pipeline.state.orders()) >= 2, what="the first PUTs")
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert len(pipeline.state.orders()) < len(orders)

    pipeline.state.latency_ms = 0
    pipeline.start_worker()
    pipeline.wait_applied(*orders, timeout=60)
    assert pipeline.dead_letters() == []


def test_a_broker_restart_while_events_flow_loses_nothing(pipeline: Pipeline) -> None:
    pipeline.start_worker()
    before = [7100 + i for i in range(10)]
    pipeline.publish(*(make_event(order_id) for order_id in before))
    pipeline.wait_applied(*before)

    pipeline.state.latency_ms = 200
    during = [7200 + i for i in range(10)]
    pipeline.publish(*(make_event(order_id) for order_id in during))
    restart_rabbitmq()
    pipeline.state.latency_ms = 0

    # Both consumers (Celery's task consumer and our event consumer) must resume by themselves.
    after = [7300 + i for i in range(10)]
    pipeline.publish(*(make_event(order_id) for order_id in after))
    pipeline.wait_applied(*during, *after, timeout=90)
    assert pipeline.dead_letters() == []
    assert pipeline.workers[0].poll() is None
