"""Outcomes counted from what the workers themselves record, for the integration tests.

An event's outcome is an ``event applied`` log line naming it (a coalesced PUT names several
events) or a dead-letter entry for it. Counted with multiplicity: an event applied twice, or
dead-lettered twice, shows up as a count of two, never as one.

The dead-letter queue is read twice over: its entries through the project's browsing code, and
its message count straight from the broker, which sees every message (browsing skips bodies that
are not JSON objects and stops reading after a quiet spell).

``drained`` tells when the work is over: no event or task message left in the broker, neither
waiting nor held unacknowledged by a worker. A task in progress, a retry waiting for its
countdown and a killed worker's unacknowledged messages all keep a message in the broker, so
once drained, no outcome can still come.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from kombu import Connection

from tests.support import Pipeline, wait_for
from worker.broker.connection import connect, transport_options
from worker.broker.embedded import INFLIGHT
from worker.broker.topology import EVENT_QUEUES, TASKS_QUEUE

APPLIED = "event applied"
WORK_QUEUES = (*(queue.name for queue in EVENT_QUEUES), TASKS_QUEUE.name)


def records(pipeline: Pipeline, worker: int | None = None) -> list[dict[str, Any]]:
    """The log records of every worker, or of worker number ``worker`` (in start order).

    A SIGKILLed worker's last line may be cut short: lines that are not JSON are skipped.
    """
    logs = pipeline.logs if worker is None else [pipeline.logs[worker]]
    found = []
    for log in logs:
        for line in log.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                found.append(record)
    return found


def node_name(pipeline: Pipeline, worker: int) -> str:
    """The Celery node name of worker number ``worker``, as its ready line gives it."""
    for record in records(pipeline, worker):
        event = str(record.get("event", ""))
        if event.endswith(" ready."):
            return event.removesuffix(" ready.")
    raise AssertionError(f"worker {worker} never said it was ready")


def applied(pipeline: Pipeline, worker: int | None = None) -> Counter[str]:
    """How many ``event applied`` lines name each event id."""
    return Counter(
        event_id
        for record in records(pipeline, worker)
        if record.get("event") == APPLIED
        for event_id in record["event_ids"]
    )


def applied_orders(pipeline: Pipeline, worker: int) -> set[int]:
    """The orders worker number ``worker`` applied events to (one PUT is for one order)."""
    return {
        int(record["order_id"])
        for record in records(pipeline, worker)
        if record.get("event") == APPLIED
    }


def dead_letter_count(pipeline: Pipeline) -> int:
    """Dead-letter messages of any body: dead entries in the database (a message that is not an
    entry is kept as one) plus whatever still waits in the dead-letter queue."""
    return pipeline.dead_letter_count()


@dataclass
class Ledger:
    """Every outcome recorded so far."""

    applied: Counter[str]
    dead: Counter[str | None]  # event id (None for a body without one) -> entries
    reasons: dict[str | None, list[str]] = field(default_factory=dict)
    entries: list[dict[str, Any]] = field(default_factory=list)
    stored: int = 0  # the dead-letter queue's message count from the broker

    def outcomes(self, event_id: str | None) -> int:
        return self.applied[event_id] + self.dead[event_id]

    def accounted(self, event_ids: set[str]) -> bool:
        return all(self.outcomes(event_id) for event_id in event_ids)

    def summary(self) -> str:
        return (
            f"applied {dict(self.applied)}; dead-lettered {dict(self.dead)}; "
            f"{self.stored} in the dead-letter queue"
        )


def ledger(pipeline: Pipeline) -> Ledger:
    entries = pipeline.dead_letters()
    reasons: dict[str | None, list[str]] = {}
    for entry in entries:
        reasons.setdefault(entry.get("event_id"), []).append(entry["reason"])
    return Ledger(
        applied=applied(pipeline),
        dead=Counter(entry.get("event_id") for entry in entries),
        reasons=reasons,
        entries=entries,
        stored=dead_letter_count(pipeline),
    )


def assert_no_dead_letters(pipeline: Pipeline) -> None:
    """Nothing in the dead-letter queue: no entry, and no message of any kind."""
    assert pipeline.dead_letters() == []
    assert dead_letter_count(pipeline) == 0, "the broker holds dead-letter messages"


# Waiting until the work is over ------------------------------------------------------------


def _ready_in_work_queues(pipeline: Pipeline) -> int:
    """Messages waiting (not those held unacknowledged), asked over AMQP: quick."""
    with connect(pipeline.broker) as connection:
        channel: Any = connection.channel()
        try:
            return sum(
                int(queue(channel).queue_declare(passive=True).message_count)
                for queue in (*EVENT_QUEUES, TASKS_QUEUE)
            )
        finally:
            channel.close()


def _in_work_queues_rabbitmq(pipeline: Pipeline, url: str) -> int:
    if waiting := _ready_in_work_queues(pipeline):
        return waiting
    # Only RabbitMQ's own tool counts the unacknowledged messages too; it takes a moment.
    vhost = Connection(url).virtual_host or "/"
    listing = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "-p", vhost, "--no-table-headers", "name", "messages"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    counts = dict(line.split("\t") for line in listing.splitlines() if "\t" in line)
    # "messages" counts the ready and the unacknowledged ones alike.
    return sum(int(counts.get(name, 0)) for name in WORK_QUEUES)


def _in_work_queues_redis(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        # kombu keeps a queue in one list per priority step, and a message delivered but not
        # acknowledged (a task in progress, a retry waiting for its countdown) in "unacked".
        lists = [key for name in WORK_QUEUES for key in client.keys(f"{name}*")]
        waiting = sum(int(client.llen(key)) for key in lists)
        return waiting + int(client.hlen("unacked"))
    finally:
        client.close()


def _in_work_queues_embedded(pipeline: Pipeline) -> int:
    folder = Path(transport_options(pipeline.broker)["data_folder_in"])
    # A message read is moved to inflight/<pid>/ until it is acknowledged.
    places = [folder, *(p for p in (folder.parent / INFLIGHT).glob("*") if p.is_dir())]
    return sum(
        1
        for place in places
        for path in place.glob("*.msg")
        if path.name.partition(".")[2].removesuffix(".msg") in WORK_QUEUES
    )


def in_work_queues(pipeline: Pipeline) -> int:
    """Event and task messages in the broker, waiting or held unacknowledged."""
    url = pipeline.broker_url
    if url is None:
        return _in_work_queues_embedded(pipeline)
    if url.startswith("redis"):
        return _in_work_queues_redis(url)
    return _in_work_queues_rabbitmq(pipeline, url)


def drained(pipeline: Pipeline) -> bool:
    """No event or task message left anywhere in the broker: nothing more can happen."""
    if in_work_queues(pipeline):
        return False
    url = pipeline.broker_url
    if url is not None and url.startswith("redis"):
        # Asked twice, a moment apart: kombu's Redis transport takes a message off its list a
        # moment before it records it as unacknowledged.
        time.sleep(0.2)
        return in_work_queues(pipeline) == 0
    return True


def wait_drained(pipeline: Pipeline, timeout: float = 60) -> None:
    wait_for(lambda: drained(pipeline), timeout, what="the broker to hold no event or task")


def wait_until_or_drained(
    pipeline: Pipeline, condition: Callable[[], object], timeout: float, what: str
) -> None:
    """Until ``condition()`` holds, or the broker holds no event or task message (then it never
    will: the caller's checks say what went wrong, sooner than a timeout would)."""
    asked = [time.monotonic()]

    def over() -> bool:
        if condition():
            return True
        if time.monotonic() - asked[0] < 2:  # asking the broker costs more than the condition
            return False
        asked[0] = time.monotonic()
        return drained(pipeline)

    wait_for(over, timeout, what=what)
