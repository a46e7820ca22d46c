"""Nothing lost through a worker killed mid-task or a broker restarted while events flow.

Counted from the workers' own records, not from the simulator's stored orders: the simulator
finishes a PUT even after the worker that sent it died, so an order it holds does not show
that its event was handled. Each event must have an ``event applied`` line.
"""

from __future__ import annotations

import signal
from typing import Any

import pytest

from tests.integration.ledger import (
    applied,
    assert_no_dead_letters,
    wait_drained,
    wait_until_or_drained,
)
from tests.support import Pipeline, make_event, restart_rabbitmq, wait_for

pytestmark = pytest.mark.integration


def wait_all_applied(pipeline: Pipeline, events: list[dict[str, Any]], timeout: float) -> None:
    """Until every event has an ``event applied`` line; fails early once the broker holds no
    event or task message any more, since nothing can then apply what is missing."""
    ids = {event["event_id"] for event in events}
    wait_until_or_drained(
        pipeline, lambda: ids <= set(applied(pipeline)), timeout, "every event to be applied"
    )
    missing = sorted(ids - set(applied(pipeline)))
    assert missing == [], f"{len(missing)} of {len(ids)} events lost: {missing}"
    wait_drained(pipeline)


@pytest.mark.parametrize("pipeline", ["rabbitmq", "redis", "embedded"], indirect=True)
def test_a_worker_killed_mid_task_loses_nothing(pipeline: Pipeline) -> None:
    # Redis hands out a dead worker's messages after the visibility timeout, and the dead
    # worker's order locks run out after their lifetime: keep both short here.
    pipeline.env_overrides["ORDER_SYNC_REDIS_VISIBILITY_TIMEOUT"] = "2"
    pipeline.env_overrides["ORDER_SYNC_ORDER_LOCK_TTL"] = "1"
    pipeline.state.latency_ms = 300
    orders = [7000 + i for i in range(16)]
    events = [make_event(order_id) for order_id in orders]
    pipeline.publish(*events)
    first = pipeline.start_worker()
    # Some PUTs answered, more in flight, the rest prefetched or still queued.
    wait_for(lambda: len(pipeline.state.orders()) >= 2, what="the first PUTs")
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert len(pipeline.state.orders()) < len(orders)

    pipeline.state.latency_ms = 0
    pipeline.start_worker()
    wait_all_applied(pipeline, events, timeout=60)
    killed, survivor = applied(pipeline, 0), applied(pipeline, 1)
    for event in events:
        event_id = event["event_id"]
        # Once by either worker; twice only if the killed worker applied it (its PUT answered
        # and its line written) and died before recording that and acking the message, which
        # then came back to the survivor.
        assert (killed[event_id], survivor[event_id]) in ((1, 0), (0, 1), (1, 1)), event_id
    assert set(applied(pipeline)) == {event["event_id"] for event in events}
    assert_no_dead_letters(pipeline)


def test_a_broker_restart_while_events_flow_loses_nothing(pipeline: Pipeline) -> None:
    pipeline.start_worker()
    before = [make_event(7100 + i) for i in range(10)]
    pipeline.publish(*before)
    pipeline.wait_applied(*(event["order_id"] for event in before))

    pipeline.state.latency_ms = 200
    during = [make_event(7200 + i) for i in range(10)]
    pipeline.publish(*during)
    restart_rabbitmq()
    pipeline.state.latency_ms = 0

    # Both consumers (Celery's task consumer and our event consumer) must resume by themselves.
    after = [make_event(7300 + i) for i in range(10)]
    pipeline.publish(*after)
    events = before + during + after
    wait_all_applied(pipeline, events, timeout=90)
    # A message whose ack was lost with the connection comes back, but its event is already
    # recorded as applied in the shared store: the copy is acked without a second PUT.
    assert applied(pipeline) == {event["event_id"]: 1 for event in events}
    assert_no_dead_letters(pipeline)
    assert pipeline.workers[0].poll() is None
