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
    drained,
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


def pool_child_calling(main: psutil.Process, port: int) -> psutil.Process:
    """The worker's pool child that has a connection open to the simulator's ``port``."""
    for child in main.children(recursive=True):
        try:
            connections = child.net_connections(kind="tcp")
        except psutil.NoSuchProcess:
            continue
        if any(c.raddr and c.raddr.port == port for c in connections):
            return child
    raise AssertionError(f"no child of {main.pid} is connected to port {port}")


def test_a_pool_child_killed_mid_task_has_its_event_applied_once(pipeline: Pipeline) -> None:
    # The killed child's order lock runs out after its lifetime: keep that short.
    pipeline.env_overrides["ORDER_SYNC_ORDER_LOCK_TTL"] = "1"
    pipeline.state.script_order(9960, ["slow:1500"])
    # "-P prefork" would run threads: Celery takes "prefork", its own default, to mean "not
    # given" and uses the app's worker_pool ("threads") instead. "processes" is Celery's other
    # name for the prefork pool, and is honoured.
    main = pipeline.start_worker("-P", "processes", "-c", "2")
    event = make_event(9960, "evt-prefork")
    pipeline.publish(event)
    wait_for(lambda: pipeline.state.put_requests >= 1, what="the slow PUT to start")
    child = pool_child_calling(psutil.Process(main.pid), pipeline.simulator.port)
    child.send_signal(signal.SIGKILL)

    # The simulator finishes the dead child's PUT anyway, so the order it stores says nothing:
    # the event must be applied (and logged so) by another child, from its redelivered message.
    wait_for(
        lambda: applied(pipeline)["evt-prefork"] or drained(pipeline),
        timeout=30,
        what="the event to be applied again, or the broker to hold nothing",
    )
    assert applied(pipeline)["evt-prefork"], "the event died with the pool child"
    wait_drained(pipeline)
    assert applied(pipeline) == {"evt-prefork": 1}
    assert_no_dead_letters(pipeline)
    assert any("WorkerLostError" in json.dumps(r) for r in records(pipeline)), "no child lost"
    assert main.poll() is None
    wait_for(lambda: len(pipeline.statuses(9960)) == 2, what="the dead child's PUT to end")
