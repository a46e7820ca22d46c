"""Broker connections: the configured URL, or the embedded on-disk broker for one machine.

Publisher confirms are on for AMQP: without them a publish during broker pressure or a restart can
vanish silently. The embedded broker is kombu's filesystem transport under the data directory,
extended in ``worker.broker.embedded`` so that a crashed process loses nothing.
"""

from __future__ import annotations

from typing import Any

import structlog
from kombu import Connection

from worker.broker import embedded
from worker.broker.topology import DEAD_LETTER_QUEUE, EVENT_QUEUES, TASKS_QUEUE
from worker.settings import BrokerSettings

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
