"""Broker connections: the configured URL, or the embedded on-disk broker for one machine.

Publisher confirms are on for AMQP: without them a publish during broker pressure or a restart can
vanish silently. The embedded broker is kombu's filesystem transport under the data directory,
extended in ``worker.broker.embedded`` so that a crashed process loses nothing.

For a RabbitMQ cluster the URL lists every node, separated by ``;``
(``amqp://u:p@rabbit-a:5672/v;amqp://u:p@rabbit-b:5672/v;...``): kombu connects to the first
that answers and, when that node is lost, moves on to the next by itself (round robin).
"""

from __future__ import annotations

import re
from typing import Any

import amqp.exceptions
import structlog
from kombu import Connection, Queue

from worker.broker import embedded
from worker.broker.topology import (
    CONFIGURED,
    DEAD_LETTER_QUEUE,
    EVENT_QUEUES,
    TASKS_QUEUE,
    Topology,
    queue_arguments,
)
from worker.settings import CLASSIC, QUEUE_TYPE_SETTING, QUORUM, BrokerSettings

log = structlog.get_logger(__name__)

PERSISTENT = 2  # AMQP delivery mode: the broker writes the message to disk
# A publish waits out a short broker hiccup (a restart, a failover) before it gives up.
PUBLISH_RETRY_POLICY = {"max_retries": 5, "interval_start": 0.2, "interval_step": 0.5}

EMBEDDED_POLL_SECONDS = 0.1


def transport_options(settings: BrokerSettings) -> dict[str, Any]:
    """Options for the broker's transport; for the embedded broker, its folders (created)."""
    if settings.embedded_dir is not None:
        embedded.register()
        queue_dir = settings.embedded_dir / "queue"
        control_dir = settings.embedded_dir / "control"
        for folder in (queue_dir, control_dir):
            folder.mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(queue_dir),
            "data_folder_out": str(queue_dir),
            "control_folder": str(control_dir),
            # Files are polled; the default of one second would add a second to every hop.
            "polling_interval": EMBEDDED_POLL_SECONDS,
        }
    scheme = settings.url.split(":", 1)[0]
    if scheme in ("amqp", "amqps", "pyamqp"):
        return {"confirm_publish": True}
    if scheme in ("redis", "rediss"):
        visibility = settings.redis_visibility_timeout
        return {
            "visibility_timeout": visibility,
            # Look for messages a crashed worker took every few seconds (one cheap ZRANGE),
            # instead of kombu's default of roughly every 100 s.
            "unacked_restore_interval": max(1, min(10, int(visibility / 4))),
            "unacked_restore_throttle": 1,
        }
    return {}


def connect(settings: BrokerSettings) -> Connection:
    """A new (lazy) connection with the transport options this project relies on."""
    return Connection(settings.url, transport_options=transport_options(settings))


def queue_depths(connection: Connection) -> dict[str, int]:
    """Messages waiting in each of our queues (declaring one is harmless: all are durable)."""
    channel: Any = connection.channel()
    try:
        depths = {}
        for queue in (*EVENT_QUEUES, TASKS_QUEUE, DEAD_LETTER_QUEUE):
            bound: Any = queue(channel)
            depths[queue.name] = int(bound.queue_declare().message_count)
        return depths
    finally:
        channel.close()


def warn_if_embedded(settings: BrokerSettings) -> None:
    if settings.is_embedded:
        log.warning(
            "using the embedded on-disk broker: for one machine only; "
            "set CELERY_BROKER_URL to RabbitMQ or Redis for production",
            path=str(settings.embedded_dir),
        )


def redacted(url: str) -> str:
    """The broker URL without its password, for logs."""
    return str(Connection(url).as_uri(include_password=False))


# Queue arguments ------------------------------------------------------------------------------

PRECONDITION_FAILED = 406
_CURRENT_TYPE = re.compile(r"current is (?:the value )?'(\w+)'")


class TopologyMismatch(Exception):
    """The broker holds our queues (or the task exchange) declared otherwise than this process
    declares them; the message says which, and how to move them over."""


def is_amqp(url: str) -> bool:
    return url.split(":", 1)[0] in ("amqp", "amqps", "pyamqp")


def existing_queue_type(connection: Connection, name: str) -> str | None:
    """The type of queue ``name`` on the broker (``classic``, ``quorum``...), None if absent.

    AMQP has no question for it. A declaration naming the classic type succeeds on a classic
    queue; on another, RabbitMQ refuses it naming one argument that differs, and when the type
    is the only one, the message names the queue's type. So the classic type is declared with
    no other argument, then with those of our quorum work queues.
    """
    channel: Any = connection.channel()
    try:
        Queue(name, durable=True)(channel).queue_declare(passive=True)
    except amqp.exceptions.NotFound:
        return None
    finally:
        _close_quietly(channel)
    refusal = ""
    for arguments in ({}, queue_arguments(QUORUM) or {}):
        channel = connection.channel()
        try:
            probe = Queue(
                name, durable=True, queue_arguments={**arguments, "x-queue-type": CLASSIC}
            )
            probe(channel).queue_declare()
            return CLASSIC
        except amqp.exceptions.PreconditionFailed as exc:
            refusal = str(exc)
            found = _CURRENT_TYPE.search(refusal) if "'x-queue-type'" in refusal else None
            if found is not None:
                return found.group(1)
        finally:
            _close_quietly(channel)
    raise TopologyMismatch(f"cannot tell the type of queue {name}: {refusal}")


def _close_quietly(channel: Any) -> None:
    try:
        channel.close()
    except Exception:  # a channel the broker closed (404, 406) is closed already
        log.debug("channel already closed")


def _declare_each(connection: Connection, declared: Topology) -> list[str]:
    """Declare the task exchange and every queue of ours, each on a channel of its own; what
    the broker holds otherwise, described (a queue's type, or the broker's own words)."""
    refused: list[str] = []
    exchange = declared.tasks_exchange
    channel: Any = connection.channel()
    try:
        exchange(channel).declare()
    except amqp.exceptions.PreconditionFailed:
        other = "direct" if exchange.type == "topic" else "topic"
        refused.append(f"the task exchange {exchange.name} is {other}")
    finally:
        _close_quietly(channel)
    for queue in declared.queues:
        channel = connection.channel()
        try:
            queue(channel).queue_declare()
        except amqp.exceptions.PreconditionFailed as exc:
            found = existing_queue_type(connection, queue.name)
            if found != declared.queue_type:
                refused.append(f"{queue.name} is {found}")
            else:
                refused.append(f"{queue.name} has other arguments ({exc})")
        finally:
            _close_quietly(channel)
    return refused


def mismatch_message(refused: list[str], declared: Topology) -> str:
    wanted = declared.queue_type
    other = CLASSIC if wanted == QUORUM else QUORUM
    return (
        f"{QUEUE_TYPE_SETTING}={wanted}, but on the broker " + ", ".join(refused) + ". A queue's "
        f"type and arguments cannot change in place: stop every worker and run "
        f"`order-sync queues migrate --to {wanted}`, which moves the waiting messages over, "
        f"or set {QUEUE_TYPE_SETTING}={other} if that is what the broker holds."
    )


def check_topology(connection: Connection, declared: Topology = CONFIGURED) -> None:
    """Raise TopologyMismatch (naming the setting and the command) when the broker holds our
    queues or the task exchange with other arguments than ``declared``; declare what is missing.
    """
    refused = _declare_each(connection, declared)
    if refused:
        raise TopologyMismatch(mismatch_message(refused, declared))


def check_topology_when_reachable(settings: BrokerSettings) -> None:
    """At a worker's start, on RabbitMQ: wait for the broker as Celery would, then check.

    Without it, a worker started with a queue type other than the broker's would fail deep in
    Celery's start with a bare PRECONDITION_FAILED, and be restarted to fail again.
    """
    if settings.is_embedded or not is_amqp(settings.url):
        return

    def waiting(exc: Exception, interval: float) -> None:
        log.warning(
            "broker not reachable; queue declarations are checked once it is",
            error=str(exc),
            retry_in=interval,
        )

    with connect(settings) as connection:
        connection.ensure_connection(errback=waiting, interval_max=5)  # until it answers
        check_topology(connection)
