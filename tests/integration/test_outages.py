"""Outages of the whole API, refused credentials and an operator's pause: the fleet pauses,
probes gently, resumes by itself and dead-letters nothing (worker/coordination/gate.py).

Two workers share Redis; each outage lasts over ten times the suite's retry budget (5 retries
with waits up to 0.3 s, about 1.5 s), so without the gate every event would be dead-lettered.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import pytest
import redis

from tests.support import FLEET_REDIS_URL, Pipeline, make_event, wait_for
from worker.broker.connection import connect
from worker.broker.topology import DEAD_LETTER_QUEUE, EVENTS_QUEUE
from worker.coordination.gate import GATE_KEY

pytestmark = pytest.mark.integration

OUTAGE_SECONDS = 20.0
PROBE_CAP = "2"  # seconds between probes at the most, so a return is noticed quickly
# The gate shows in the store within this many failures: two per order would take longer.
THRESHOLD = "4"


def _gate() -> dict[str, Any] | None:
    client = redis.Redis.from_url(FLEET_REDIS_URL)
    try:
        raw = client.get(GATE_KEY)
    finally:
        client.close()
    return None if raw is None else json.loads(raw)


def _queue(pipeline: Pipeline, queue: Any) -> tuple[int, int]:
    """(messages, consumers) of a queue, as the broker counts them."""
    with connect(pipeline.broker) as connection:
        declared = queue(connection.channel()).queue_declare(passive=True)
        return int(declared.message_count), int(declared.consumer_count)


def _start_fleet(pipeline: Pipeline, **settings: str) -> None:
    pipeline.env_overrides.update(
        ORDER_SYNC_OUTAGE_THRESHOLD=THRESHOLD, ORDER_SYNC_PROBE_INTERVAL_MAX=PROBE_CAP, **settings
    )
    pipeline.start_worker()
    pipeline.start_worker()


def _events(first_order: int, orders: int) -> list[dict[str, Any]]:
    """Two events per order; the second, newer, changes one field of the first."""
    events = []
    for order_id in range(first_order, first_order + orders):
        events.append(make_event(order_id, customer_id=1))
        newer = make_event(order_id, customer_id=2)
        newer["occurred_at"] = "2026-11-26T10:00:05Z"
        events.append(newer)
    return events


def _all_newest(pipeline: Pipeline, orders: range) -> bool:
    return all((pipeline.state.order(order_id) or {}).get("CustomerId") == 2 for order_id in orders)


def _stored_events(pipeline: Pipeline) -> int:
    """Events waiting for their order's turn in the fleet's store."""
    import redis

    from worker.coordination.orders import KEYS

    client = redis.Redis.from_url(pipeline.env["ORDER_SYNC_REDIS_URL"])
    try:
        return int(client.get(KEYS.events) or 0)
    finally:
        client.close()


def _no_dead_letters(pipeline: Pipeline) -> None:
    assert _queue(pipeline, DEAD_LETTER_QUEUE)[0] == 0
    assert pipeline.dead_letters() == []


def _calls_between(pipeline: Pipeline, start: float, end: float) -> list[float]:
    return sorted(r["at"] for r in pipeline.state.requests() if start <= r["at"] < end)


def _assert_paused_quietly(pipeline: Pipeline, paused_at: float, until: float) -> None:
    """While paused: no worker reads the events queue, and the fleet calls at most once a
    second (its probes)."""
    wait_for(lambda: _queue(pipeline, EVENTS_QUEUE)[1] == 0, 5, "every worker to stop reading")
    time.sleep(max(0.0, until - time.time()))
    calls = _calls_between(pipeline, paused_at + 2, until)  # after the in-flight ones ended
    per_second = Counter(int(at) for at in calls)
    assert max(per_second.values(), default=0) <= 1, per_second
    assert len(calls) >= 2, "the fleet never probed"


@pytest.mark.parametrize("endpoint", ["order", "token"])
def test_an_outage_of_any_length_pauses_the_fleet_and_dead_letters_nothing(
    fleet: Pipeline, endpoint: str
) -> None:
    if endpoint == "token":
        fleet.state.expire_tokens()  # every worker needs a new token, and cannot get one
    fleet.state.outage(endpoint, 503, OUTAGE_SECONDS)
    began = time.time()
    _start_fleet(fleet)
    orders = range(9100, 9130)
    fleet.publish(*_events(orders.start, len(orders)))

    closed = wait_for(_gate, 15, "the fleet to see the outage")
    assert closed["kind"] == "api_unavailable"
    paused_at = time.time()
    _assert_paused_quietly(fleet, paused_at, began + OUTAGE_SECONDS - 1)
    # The events wait: those read before the gate closed in the store, the rest in the broker.
    stored = _stored_events(fleet)
    assert stored + _queue(fleet, EVENTS_QUEUE)[0] > 0, "no event is waiting"

    wait_for(lambda: _all_newest(fleet, orders), 25, "every order to end with its newest value")
    applied_at = time.time()
    assert applied_at - (began + OUTAGE_SECONDS) < 15
    assert _gate() is None
    _no_dead_letters(fleet)
    retries = Counter(
        r.get("reason") for r in fleet.log_records() if r.get("event") == "event retry scheduled"
    )
    # The failures that made the streak each spent a retry; nothing after the gate closed did.
    assert sum(retries.values()) <= int(THRESHOLD) * 2, retries


def test_a_lone_failing_order_is_still_dead_lettered_while_the_others_flow(
    fleet: Pipeline,
) -> None:
    fleet.state.script_order(9200, [503] * 50)
    _start_fleet(fleet)
    fleet.publish(make_event(9200, customer_id=5))
    for order_id in range(9201, 9240):
        fleet.publish(make_event(order_id, customer_id=5))
        time.sleep(0.05)  # successes keep arriving while 9200 fails
    (entry,) = fleet.wait_dead_letters(1)
    assert (entry["order_id"], entry["reason"]) == (9200, "retries_exhausted")
    fleet.wait_applied(*range(9201, 9240))
    assert _gate() is None


def test_refused_credentials_pause_the_fleet_until_the_password_file_changes(
    fleet: Pipeline,
) -> None:
    password_file = fleet.tmp_path / "sellercloud-password"
    password_file.write_text(fleet.env["SELLERCLOUD_PASSWORD"])
    fleet.env_overrides["SELLERCLOUD_PASSWORD_FILE"] = str(password_file)
    fleet.state.set_password("rotated-password-1")  # the integration's password was rotated
    _start_fleet(fleet)
    orders = range(9300, 9310)
    fleet.publish(*[make_event(order_id, customer_id=3) for order_id in orders])

    closed = wait_for(_gate, 15, "the fleet to pause for the credentials")
    assert closed["kind"] == "credentials"
    refusals = [
        r
        for r in fleet.log_records()
        if r.get("event") == "Sellercloud refused the credentials: the fleet pauses"
    ]
    assert len(refusals) == 1 and refusals[0]["level"] == "error"
    wait_for(lambda: _queue(fleet, EVENTS_QUEUE)[1] == 0, 5, "every worker to stop reading")
    time.sleep(3)
    assert all(fleet.state.order(order_id) is None for order_id in orders)

    password_file.write_text("rotated-password-1\n")
    wait_for(lambda: _gate() is None, 15, "the fleet to resume with the new password")
    fleet.wait_applied(*orders)
    _no_dead_letters(fleet)


def _cli(pipeline: Pipeline, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        env=pipeline.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_an_operator_pauses_and_resumes_the_fleet(fleet: Pipeline) -> None:
    _start_fleet(fleet)
    paused = _cli(fleet, "pause", "--reason", "maintenance window")
    assert paused.returncode == 0, paused.stderr
    wait_for(lambda: _queue(fleet, EVENTS_QUEUE)[1] == 0, 5, "every worker to stop reading")
    orders = range(9400, 9420)
    fleet.publish(*[make_event(order_id, customer_id=4) for order_id in orders])
    time.sleep(3)
    assert not fleet.state.requests()
    assert _queue(fleet, EVENTS_QUEUE)[0] == len(orders)

    status = _cli(fleet, "status", "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)["fleet"]
    assert report["calls"] == "paused: operator"
    assert report["paused_because"] == "maintenance window"
    since = dt.datetime.fromisoformat(report["paused_since"])
    assert (dt.datetime.now(dt.UTC) - since).total_seconds() < 60

    resumed = _cli(fleet, "resume")
    assert resumed.returncode == 0, resumed.stderr
    fleet.wait_applied(*orders)
    _no_dead_letters(fleet)


def test_two_plain_worker_starts_on_one_host_both_serve(pipeline: Pipeline) -> None:
    """No -n: each process takes a node name of its own instead of clashing on celery@host."""
    for _ in range(2):
        pipeline.start_worker(command=[sys.executable, "-m", "worker.cli", "worker", "-c", "2"])
    # Both read the events queue, and both still run a while later (a clash kills at once).
    wait_for(lambda: _queue(pipeline, EVENTS_QUEUE)[1] == 2, 10, "both workers to read events")
    time.sleep(2)
    assert all(process.poll() is None for process in pipeline.workers)
    orders = range(9500, 9540)
    pipeline.publish(*[make_event(order_id, customer_id=6) for order_id in orders])
    pipeline.wait_applied(*orders)
    assert _queue(pipeline, EVENTS_QUEUE)[1] == 2


def _probe(port: int, path: str) -> int:
    import requests

    try:
        return requests.get(f"http://127.0.0.1:{port}{path}", timeout=5).status_code
    except requests.ConnectionError:
        return 0


def test_the_worker_answers_its_own_probes(fleet: Pipeline) -> None:
    """Kubernetes asks the worker over HTTP: alive while paused, not ready."""
    import socket

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    fleet.env_overrides["ORDER_SYNC_METRICS_PORT"] = str(port)
    fleet.start_worker()
    wait_for(lambda: _probe(port, "/readyz") == 200, 10, "the worker to be ready")
    assert _probe(port, "/livez") == 200

    assert _cli(fleet, "pause", "--reason", "probe test").returncode == 0
    wait_for(lambda: _probe(port, "/readyz") == 503, 10, "the worker to be unready while paused")
    assert _probe(port, "/livez") == 200
    assert _cli(fleet, "resume").returncode == 0
    wait_for(lambda: _probe(port, "/readyz") == 200, 10, "the worker to be ready again")
