"""Outcomes no other test reaches, end to end with real workers: a bug of ours (``internal_error``),
a 4xx other than 400 and 404, and a prefork pool child killed in the middle of a task.

Each event's outcome is counted from the workers' records (see ``ledger``), once the broker
holds no event or task message any more, so a late second outcome would be counted too.
"""

from __future__ import annotations

import json
import signal
from typing import Any

import psutil
import pytest
from celery import Celery

from tests.integration.ledger import (
    applied,
    assert_no_dead_letters,
    dead_letter_count,
    records,
    wait_drained,
)
from tests.support import Pipeline, make_event, wait_for
from worker.apply.tasks import APPLY_ORDER_EVENT
from worker.broker.topology import TASKS_QUEUE
from worker.intake.envelope import envelope

pytestmark = pytest.mark.integration


def send_task(pipeline: Pipeline, *args: Any) -> None:
    """Queue ``order_sync.apply_order_event`` as any Celery client would, on the tasks queue
    (the one for "tasks queued by other means" besides retries)."""
    assert pipeline.broker_url is not None
    producer_app = Celery("another-client", broker=pipeline.broker_url, set_as_current=False)
    producer_app.conf.broker_transport_options = {"confirm_publish": True}
    with producer_app.producer_or_acquire() as producer:
        producer_app.send_task(
            APPLY_ORDER_EVENT, args=args, queue=TASKS_QUEUE, producer=producer, serializer="json"
        )
    producer_app.close()


def test_a_bug_of_ours_dead_letters_the_event_as_internal_error(pipeline: Pipeline) -> None:
    pipeline.start_worker()
    # An envelope that carries the event as a JSON object where its text belongs: nothing in
    # our code expects that, and decoding it raises a TypeError, handled as no other error is.
    event = make_event(9950, "evt-internal")
    broken = envelope(json.dumps(event), content_type="application/json", message_id="m-1")
    broken["body"] = event
    send_task(pipeline, broken)
    [entry] = pipeline.wait_dead_letters(1)
    assert entry["reason"] == "internal_error"
    assert entry["error"].startswith("TypeError: the JSON object must be str"), entry["error"]
    assert 'in decode\n    return json.loads(env["body"])' in entry["traceback"], entry["traceback"]
    assert entry["raw_body"] == event  # what the task was given, kept for whoever fixes it
    assert any(r.get("event") == "unexpected error while applying event" for r in records(pipeline))

    # The worker goes on: the same event, sent as upstream sends it, is applied.
    pipeline.publish(event)
    pipeline.wait_applied(9950)
    wait_drained(pipeline)
    assert applied(pipeline) == {"evt-internal": 1}
    assert dead_letter_count(pipeline) == 1
    assert pipeline.workers[0].poll() is None


def test_other_4xx_answers_are_dead_lettered_as_api_rejected_without_retries(
    pipeline: Pipeline,
) -> None:
    statuses = {9955: 409, 9956: 422}
    for order_id, status in statuses.items():
        pipeline.state.script_order(order_id, [status])
    pipeline.start_worker()
    refused = {
        order_id: make_event(order_id, f"evt-{status}") for order_id, status in statuses.items()
    }
    pipeline.publish(*refused.values(), make_event(9957, "evt-fine"))
    entries = pipeline.wait_dead_letters(2)
    pipeline.wait_applied(9957)
    wait_drained(pipeline)
    assert sorted(e["event_id"] for e in entries) == ["evt-409", "evt-422"]
    for entry in entries:
        order_id, status = entry["order_id"], statuses[entry["order_id"]]
        assert (entry["reason"], entry["status_code"]) == ("api_rejected", status)
        assert entry["error"] == f"Update Order {order_id}: HTTP {status}"
        assert isinstance(entry["response_body"], dict) and entry["response_body"].get("Message")
        customer_id = refused[order_id]["changes"]["customer_id"]
        assert entry["request"]["body"] == {"CustomerId": customer_id}
        assert entry["attempts"] == 1
        assert pipeline.statuses(order_id) == [status]  # refused for good: never sent again
        assert pipeline.state.order(order_id) is None
    assert applied(pipeline) == {"evt-fine": 1}
    assert dead_letter_count(pipeline) == 2


def test_pool_children_killed_while_a_backlog_drains_lose_nothing(pipeline: Pipeline) -> None:
    """With the prefork pool, turns are taken by the worker's main process and events wait in
    the store: a pool child holds no event, so killing every child loses none."""
    pipeline.env_overrides["ORDER_SYNC_RATE_LIMIT"] = "10/s"
    pipeline.state.latency_ms = 50
    # "-P prefork" would run threads: Celery takes "prefork", its own default, to mean "not
    # given" and uses the app's worker_pool ("threads") instead. "processes" is Celery's other
    # name for the prefork pool, and is honoured.
    main = pipeline.start_worker("-P", "processes", "-c", "2")
    events = [make_event(9960 + i % 20, f"evt-prefork-{i}", customer_id=i) for i in range(40)]
    for i, event in enumerate(events):
        event["occurred_at"] = f"2026-11-26T10:00:{i // 20:02d}Z"
    pipeline.publish(*events)
    wait_for(lambda: pipeline.state.put_requests >= 3, what="the backlog to start draining")
    children = psutil.Process(main.pid).children(recursive=True)
    assert children, "no pool child to kill"
    for child in children:
        child.send_signal(signal.SIGKILL)
    assert pipeline.state.put_requests < 20, "killed too late to matter"
    wait_for(
        lambda: all(pipeline.state.order(9960 + i) for i in range(20)),
        timeout=30,
        what="every order to be applied",
    )
    wait_drained(pipeline)
    assert applied(pipeline) == {e["event_id"]: 1 for e in events}
    for i in range(20):  # the newest value of each order: its second event's
        assert (pipeline.state.order(9960 + i) or {}).get("CustomerId") == 20 + i
    assert_no_dead_letters(pipeline)
    assert main.poll() is None
