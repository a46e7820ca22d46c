"""Quorum queues on the main broker, each test in a virtual host of its own.

What the queue type changes, shown on a real broker: a message handed out as often as the
delivery limit allows lands in the dead-letter queue with its ``x-death`` header; a countdown
retry waits in the broker's delay queues, not in a worker, and survives the worker's SIGKILL;
``order-sync queues migrate`` moves every waiting message (counted with multiplicity) from classic
queues to quorum ones while events are still being published; a worker whose queue type does not
match the broker's stops at once with a message naming the setting and the command.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from kombu import Connection, Producer

from tests.cluster.support import QUORUM_TOPOLOGY, QuorumBroker, on_vhost, queue_infos, vhost_on
from tests.integration.ledger import applied
from tests.support import RABBITMQ_URL, Pipeline, make_event, reachable, wait_for
from worker.apply.tasks import APPLY_ORDER_EVENT
from worker.broker.topology import QUORUM_DELIVERY_LIMIT, Topology, topology
from worker.deadletter.reasons import DELIVERY_LIMIT
from worker.intake.envelope import envelope
from worker.settings import CLASSIC, QUEUE_TYPE_SETTING, QUORUM
from worker.simulator import SimulatorServer

pytestmark = pytest.mark.integration

DELAY_QUEUE_PREFIX = "celery_delayed_"


@pytest.fixture
def vhost() -> Iterator[str]:
    if not reachable("127.0.0.1", 5672):
        pytest.fail("RabbitMQ is not running on 127.0.0.1:5672 (.ci/run starts it)")
    with vhost_on(None) as name:
        yield name


def vhost_url(vhost: str) -> str:
    return on_vhost(RABBITMQ_URL, vhost)


def declare(url: str, declared: Topology) -> None:
    with Connection(url) as connection:
        channel: Any = connection.channel()
        for queue in declared.queues:
            queue(channel).declare()
        channel.close()


def snapshot(url: str, declared: Topology) -> Counter[tuple[str, str, str | None]]:
    """(queue, body, message id) of every waiting message, with multiplicity, left in place."""
    found: Counter[tuple[str, str, str | None]] = Counter()
    with Connection(url) as connection:
        for queue in declared.queues:
            channel: Any = connection.channel()
            while (message := channel.basic_get(queue=queue.name, no_ack=False)) is not None:
                body = message.body.decode() if isinstance(message.body, bytes) else message.body
                found[(queue.name, body, message.properties.get("message_id"))] += 1
            channel.close()
    return found


def order_sync(url: str, *args: str, queue_type: str = CLASSIC) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(Path.home()),
        "CELERY_BROKER_URL": url,
        QUEUE_TYPE_SETTING: queue_type,
        "ORDER_SYNC_LOG_FORMAT": "json",
    }
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_message_at_the_delivery_limit_is_dead_lettered_with_its_x_death(vhost: str) -> None:
    url = vhost_url(vhost)
    declare(url, QUORUM_TOPOLOGY)
    broker = QuorumBroker(url)
    event = make_event(7001)
    broker.publish([event])
    returned = 0
    with Connection(url) as connection:
        channel: Any = connection.channel()
        # A worker that dies with the message, again and again: each time it goes back.
        while (message := channel.basic_get(queue=QUORUM_TOPOLOGY.events.name)) is not None:
            channel.basic_reject(message.delivery_tag, requeue=True)
            returned += 1
            assert returned <= QUORUM_DELIVERY_LIMIT + 1, "the delivery limit never struck"
        channel.close()
    assert returned == QUORUM_DELIVERY_LIMIT + 1
    dead = wait_for(broker.dead_letters, what="the message in the dead-letter queue")
    assert len(dead) == 1, dead
    body, headers = dead[0]
    assert body == event
    (death,) = headers["x-death"]
    assert death["reason"] == DELIVERY_LIMIT
    assert death["queue"] == QUORUM_TOPOLOGY.events.name
    assert death["count"] == 1
    assert broker.ready(QUORUM_TOPOLOGY.events.name) == 0


def test_migrate_moves_every_message_while_events_are_published(
    vhost: str, simulator: SimulatorServer, tmp_path: Path
) -> None:
    url = vhost_url(vhost)
    classic = topology(CLASSIC)
    declare(url, classic)
    events = [make_event(8000 + i) for i in range(150)]
    # Retries waiting in the task queue, as a classic worker leaves them.
    retried = [make_event(8300 + i) for i in range(5)]
    celery = Celery("tasks-for-the-test", set_as_current=False)
    with Connection(url, transport_options={"confirm_publish": True}) as connection:
        producer = Producer(connection)
        for event in [*events, events[0], events[1]]:  # two events published twice
            producer.publish(
                json.dumps(event),
                exchange=classic.events.exchange,
                routing_key=classic.events.routing_key,
                message_id=event["event_id"],
                content_type="application/json",
                delivery_mode=2,
            )
        for i in range(5):
            producer.publish(
                {"entry": i},
                exchange=classic.dead_letters.exchange,
                routing_key=classic.dead_letters.routing_key,
                message_id=f"entry-{i}",
                delivery_mode=2,
            )
        for event in retried:
            headers, properties, body, _ = celery.amqp.as_task_v2(
                event["event_id"],
                APPLY_ORDER_EVENT,
                args=(envelope(json.dumps(event), content_type="application/json"),),
                kwargs={},
            )
            producer.publish(
                json.dumps(body),
                exchange=classic.tasks_exchange,
                routing_key=classic.tasks.routing_key,
                headers=headers,
                content_type="application/json",
                content_encoding="utf-8",
                message_id=event["event_id"],
                delivery_mode=2,
                **properties,
            )
    before = snapshot(url, classic)
    assert sum(before.values()) == 150 + 2 + 5 + 5

    # An upstream that keeps publishing meanwhile, to the exchange (it declares no queue).
    late = [make_event(8500 + i) for i in range(60)]
    upstream = QuorumBroker(url)
    publishing = threading.Thread(target=lambda: upstream.publish(late, declare=False))
    publishing.start()
    migrated = order_sync(url, "queues", "migrate", "--to", QUORUM, "--json")
    publishing.join()
    assert migrated.returncode == 0, migrated.stderr
    report = json.loads(migrated.stdout)
    moved = {entry["queue"]: entry for entry in report["queues"]}
    assert moved["order-sync.tasks"]["moved_out"] == moved["order-sync.tasks"]["moved_back"] == 5

    status = order_sync(url, "queues", "status", "--json", queue_type=QUORUM)
    assert status.returncode == 0, status.stdout + status.stderr
    assert {q["type"] for q in json.loads(status.stdout)["queues"]} == {QUORUM}

    after = snapshot(url, QUORUM_TOPOLOGY)
    late_ids = {event["event_id"] for event in late}
    kept = Counter({key: n for key, n in after.items() if key[2] not in late_ids})
    assert kept == before, "messages waiting before the migration were lost or copied"
    arrived = Counter(key[2] for key in after if key[2] in late_ids)
    assert set(arrived) == late_ids, "events published during the migration were lost"

    # A quorum worker takes them all from the migrated queues.
    pipeline = Pipeline(url, simulator, tmp_path, env_overrides={QUEUE_TYPE_SETTING: QUORUM})
    try:
        pipeline.start_worker()
        orders = [event["order_id"] for event in [*events, *retried, *late]]
        pipeline.wait_applied(*orders, timeout=60)
    finally:
        pipeline.stop_workers()


def test_migrate_refuses_while_a_worker_consumes(vhost: str) -> None:
    url = vhost_url(vhost)
    classic = topology(CLASSIC)
    declare(url, classic)
    with Connection(url) as connection:
        channel: Any = connection.channel()
        channel.basic_consume(queue=classic.events.name, callback=lambda _message: None)
        refused = order_sync(url, "queues", "migrate", "--to", QUORUM)
        channel.close()
    assert refused.returncode == 1
    assert "stop every worker first" in refused.stderr
    assert "order-sync.events (1)" in refused.stderr


def test_a_worker_of_the_other_queue_type_stops_saying_what_to_do(
    vhost: str, simulator: SimulatorServer, tmp_path: Path
) -> None:
    url = vhost_url(vhost)
    declare(url, topology(CLASSIC))
    pipeline = Pipeline(url, simulator, tmp_path, env_overrides={QUEUE_TYPE_SETTING: QUORUM})
    process = pipeline.start_worker(wait=False)
    assert process.wait(timeout=90) == 2
    log = pipeline.logs[0].read_text()
    assert f"{QUEUE_TYPE_SETTING}=quorum, but on the broker" in log
    assert "order-sync.events is classic" in log
    assert "order-sync queues migrate --to quorum" in log


def delayed(url: str) -> int:
    """Messages waiting in Celery's delay queues (no one consumes them: all are ready)."""
    broker = QuorumBroker(url)
    return sum(broker.ready(f"{DELAY_QUEUE_PREFIX}{level}") for level in range(28))


def _retried_orders(pipeline: Pipeline) -> set[int]:
    return {
        int(r["order_id"])
        for r in pipeline.log_records()
        if r.get("event") == "event retry scheduled" and r.get("order_id") is not None
    }


def test_retries_wait_outside_the_worker_and_survive_it(
    vhost: str, simulator: SimulatorServer, tmp_path: Path
) -> None:
    """An order's retry is its next turn, kept in the shared store: the worker holds no message
    for it (so none past consumer_timeout, none counted against the delivery limit), and a
    worker killed with retries pending loses none."""
    url = vhost_url(vhost)
    pipeline = Pipeline(
        url,
        simulator,
        tmp_path,
        # Waits of up to 12 s: long enough to find them waiting, short for a test.
        env_overrides={
            QUEUE_TYPE_SETTING: QUORUM,
            "ORDER_SYNC_RETRY_BACKOFF": "12",
            "ORDER_SYNC_RETRY_BACKOFF_MAX": "12",
            "ORDER_SYNC_OUTAGE_THRESHOLD": "100000",
            # Orders the killed worker was writing are free again soon after.
            "ORDER_SYNC_ORDER_LOCK_TTL": "8",
        },
    )
    events = [make_event(9000 + i) for i in range(200)]
    for event in events:
        pipeline.state.script_order(event["order_id"], [503])
    try:
        first = pipeline.start_worker()
        QuorumBroker(url).publish(events)
        wait_for(
            lambda: len(_retried_orders(pipeline)) >= 100, timeout=60, what="retries scheduled"
        )
        infos = queue_infos(None, vhost)
        work = (*QUORUM_TOPOLOGY.event_queues, QUORUM_TOPOLOGY.tasks)
        held = sum(infos[queue.name].unacknowledged for queue in work)
        # Nothing waits in the worker: at most what it is storing at this instant.
        assert held <= 16, held
        assert delayed(url) == 0, "API retries are turns in the store, not delayed messages"
        first.send_signal(signal.SIGKILL)
        first.wait()
        pipeline.start_worker()
        ids = {event["event_id"] for event in events}
        wait_for(lambda: ids <= set(applied(pipeline)), timeout=90, what="every event applied")
        done = applied(pipeline)
        assert all(done[event_id] == 1 for event_id in ids), done
        assert not any(r.get("event") == "event dead-lettered" for r in pipeline.log_records())
    finally:
        pipeline.stop_workers()


SEND_LATER = """
import json, sys
from worker.celery import app
from worker.apply.tasks import APPLY_ORDER_EVENT
from worker.broker.topology import TASKS_QUEUE
from worker.intake.envelope import envelope
for line in sys.stdin:
    event = json.loads(line)
    body = envelope(json.dumps(event), content_type="application/json")
    app.send_task(APPLY_ORDER_EVENT, args=(body,), countdown=6, queue=TASKS_QUEUE.name)
"""


def test_a_countdown_task_waits_in_the_delay_queues_not_in_the_worker(
    vhost: str, simulator: SimulatorServer, tmp_path: Path
) -> None:
    """What still goes through Celery's countdown (an event the store could not take is retried
    that way) waits in RabbitMQ's delay queues with quorum queues, and is run when due."""
    url = vhost_url(vhost)
    pipeline = Pipeline(url, simulator, tmp_path, env_overrides={QUEUE_TYPE_SETTING: QUORUM})
    events = [make_event(9300 + i) for i in range(20)]
    try:
        pipeline.start_worker()
        sent = subprocess.run(
            [sys.executable, "-c", SEND_LATER],
            input="".join(json.dumps(e) + "\n" for e in events),
            env=pipeline.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert sent.returncode == 0, sent.stderr
        wait_for(lambda: delayed(url) == len(events), timeout=10, what="the delayed tasks")
        infos = queue_infos(None, vhost)
        assert infos[QUORUM_TOPOLOGY.tasks.name].unacknowledged == 0  # none held by the worker
        assert pipeline.state.put_requests == 0
        ids = {e["event_id"] for e in events}
        wait_for(lambda: ids <= set(applied(pipeline)), timeout=60, what="every event applied")
        assert delayed(url) == 0
        assert all(applied(pipeline)[event_id] == 1 for event_id in ids)
    finally:
        pipeline.stop_workers()
