"""The three-node RabbitMQ cluster of ``rabbitmq-cluster.sh``, and quorum queues seen from a test.

The test process declares our queues as classic (its environment names no queue type), so
everything here that touches a quorum queue uses the quorum declarations explicitly.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amqp.exceptions import MessageNacked
from kombu import Connection, Producer
from kombu.exceptions import OperationalError

from worker.broker.connection import PERSISTENT, PUBLISH_RETRY_POLICY
from worker.broker.topology import EVENT_ROUTING_KEY, EVENTS_EXCHANGE, Topology, topology
from worker.settings import QUORUM

SCRIPT = Path(__file__).resolve().parent / "rabbitmq-cluster.sh"
NODES = ("a", "b", "c")
PORTS = {"a": 5701, "b": 5702, "c": 5703}
QUORUM_TOPOLOGY = topology(QUORUM)
NACK_RETRIES = 50


def node_name(node: str) -> str:
    return f"rabbit-{node}@localhost"


def script(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def ensure_cluster() -> str | None:
    """Start the cluster if need be; None when it runs, else why it cannot."""
    try:
        started = script("start")
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{SCRIPT.name} start failed: {exc}"
    if started.returncode != 0:
        return f"{SCRIPT.name} start failed: {started.stderr.strip()[-500:]}"
    return None


def stop_node(node: str) -> None:
    result = script("stop-node", node)
    assert result.returncode == 0, result.stderr


def start_node(node: str) -> None:
    result = script("start-node", node)
    assert result.returncode == 0, result.stderr


def ctl(node: str | None, *args: str, timeout: float = 60) -> str:
    """``rabbitmqctl`` against one node of the cluster, or (None) the main broker."""
    target = ["-n", node_name(node)] if node else []
    return subprocess.run(
        ["rabbitmqctl", "-q", *target, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    ).stdout


def url(node: str, vhost: str) -> str:
    return f"amqp://guest:guest@127.0.0.1:{PORTS[node]}/{vhost}"


def failover_url(vhost: str, first: str = "a") -> str:
    """Every node, ``first`` first (kombu takes them in turn when one is lost)."""
    order = NODES[NODES.index(first) :] + NODES[: NODES.index(first)]
    return ";".join(url(node, vhost) for node in order)


@contextmanager
def vhost_on(node: str | None) -> Iterator[str]:
    """A virtual host of its own on the cluster ``node`` belongs to (None: the main broker),
    deleted afterwards with everything in it."""
    name = f"order-sync-{uuid.uuid4().hex[:8]}"
    ctl(node, "add_vhost", name)
    ctl(node, "set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    try:
        yield name
    finally:
        target = ["-n", node_name(node)] if node else []
        subprocess.run(
            ["rabbitmqctl", "-q", *target, "delete_vhost", name],
            capture_output=True,
            timeout=120,
            check=False,
        )


@dataclass
class QueueInfo:
    name: str
    type: str
    leader: str
    messages: int  # ready and unacknowledged
    unacknowledged: int  # held by consumers
    online: int  # members of a quorum queue that run


def queue_infos(node: str | None, vhost: str) -> dict[str, QueueInfo]:
    """Our queues (and Celery's delay queues) as the cluster, asked on ``node``, sees them
    (None: the main broker)."""
    rows = ctl(
        node,
        "list_queues",
        "-p",
        vhost,
        "--formatter",
        "json",
        "name",
        "type",
        "leader",
        "messages",
        "messages_unacknowledged",
        "online",
        timeout=60,
    )
    found = {}
    for row in json.loads(rows or "[]"):
        online = row.get("online")
        found[row["name"]] = QueueInfo(
            name=row["name"],
            type=str(row.get("type")),
            leader=str(row.get("leader", "")),
            messages=int(row.get("messages") or 0),
            unacknowledged=int(row.get("messages_unacknowledged") or 0),
            online=len(online) if isinstance(online, list) else 0,
        )
    return found


def on_vhost(broker_url: str, vhost: str) -> str:
    """``broker_url`` (one node) with virtual host ``vhost`` instead of its own."""
    scheme, rest = broker_url.split("://", 1)
    return f"{scheme}://{rest.split('/', 1)[0]}/{vhost}"


def node_of(member: str) -> str:
    """``rabbit-b@localhost`` -> ``b``."""
    return member.removeprefix("rabbit-").split("@", 1)[0]


class QuorumBroker:
    """Publishing to and reading from our quorum queues, from the test process."""

    def __init__(self, broker_url: str, declared: Topology = QUORUM_TOPOLOGY) -> None:
        self.url = broker_url
        self.topology = declared

    def connection(self) -> Connection:
        return Connection(self.url, transport_options={"confirm_publish": True})

    def publish(self, events: Iterable[dict[str, Any]], *, declare: bool = True) -> None:
        """Each event as upstream publishes it, confirmed, retried across a node's loss;
        without ``declare``, as an upstream that declares no queue of ours."""
        with self.connection() as connection:
            producer = Producer(connection)
            for event in events:
                self._publish_one(producer, event, declare)

    def _publish_one(self, producer: Producer, event: dict[str, Any], declare: bool) -> None:
        # A quorum queue electing a leader refuses a publish (basic.nack): publish it again,
        # as an upstream publisher with confirms must.
        for attempt in range(NACK_RETRIES):
            try:
                producer.publish(
                    json.dumps(event),
                    exchange=EVENTS_EXCHANGE,
                    routing_key=EVENT_ROUTING_KEY,
                    declare=[*self.topology.event_queues, self.topology.dead_letters]
                    if declare
                    else [],
                    content_type="application/json",
                    content_encoding="utf-8",
                    delivery_mode=PERSISTENT,
                    message_id=event["event_id"],
                    retry=True,
                    retry_policy={**PUBLISH_RETRY_POLICY, "max_retries": 30},
                )
                return
            except (MessageNacked, OperationalError):
                if attempt == NACK_RETRIES - 1:
                    raise
                time.sleep(0.2)

    def ready(self, queue: str) -> int:
        with self.connection() as connection:
            channel: Any = connection.channel()
            try:
                return int(channel.queue_declare(queue=queue, passive=True).message_count)
            finally:
                channel.close()

    def browse(self, queue: str) -> list[tuple[Any, dict[str, Any]]]:
        """Every message waiting in ``queue`` as (body, headers), left where it was.

        Read without acknowledging on one channel and handed back when it closes; a quorum
        queue counts that as a delivery, which our dead-letter queue never limits.
        """
        found: list[tuple[Any, dict[str, Any]]] = []
        with self.connection() as connection:
            channel: Any = connection.channel()
            try:
                while (message := channel.basic_get(queue=queue, no_ack=False)) is not None:
                    try:
                        body: Any = json.loads(message.body)
                    except ValueError:
                        body = message.body
                    found.append((body, dict(message.properties.get("application_headers") or {})))
            finally:
                channel.close()
        return found

    def dead_letters(self) -> list[tuple[Any, dict[str, Any]]]:
        return self.browse(self.topology.dead_letters.name)
