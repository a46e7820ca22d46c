"""How far behind the fleet's reading of the events queues is, as the broker counts it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import structlog
from kombu import Connection

from worker.broker.connection import connect
from worker.broker.topology import EVENTS_BULK_QUEUE, EVENTS_QUEUE
from worker.coordination.orders import BULK, LIVE
from worker.settings import BrokerSettings

log = structlog.get_logger(__name__)

# A queue holding more events than the fleet reads in a fraction of a second has a backlog
# being read, not the ordinary trickle of live changes; the backlog lasts until it is empty.
BACKLOG_MESSAGES = 100
REFRESH_SECONDS = 0.5
QUEUES = {LIVE: EVENTS_QUEUE, BULK: EVENTS_BULK_QUEUE}


class QueueWatch:
    """``behind()``: lane -> whether its queue holds a backlog still being read; asks the broker
    at most twice a second, on a connection of its own. A lane is behind while this worker holds
    events of it read but not yet stored (``in_flight``: the broker hands a consumer up to its
    prefetch at once, so a queue looks empty before its backlog is stored), and from when its
    queue holds more than ``BACKLOG_MESSAGES`` until the queue is empty and the fleet has stopped
    storing events (``pending_events``, the store's count, no longer grows: other workers'
    last reads). When the broker cannot say, nothing is behind: turns never wait on a question
    that has no answer."""

    def __init__(
        self,
        settings: BrokerSettings,
        pending_events: Callable[[], int],
        in_flight: Callable[[str], int],
    ) -> None:
        self.settings = settings
        self.pending_events = pending_events
        self.in_flight = in_flight
        self._events = 0
        self._connection: Connection | None = None
        self._lock = threading.Lock()
        self._asked = 0.0
        self._behind: dict[str, bool] = {}

    def behind(self) -> dict[str, bool]:
        with self._lock:
            if time.monotonic() - self._asked >= REFRESH_SECONDS:
                self._behind = self._ask()
                self._asked = time.monotonic()
            return {
                lane: self._behind.get(lane, False) or self.in_flight(lane) > 0 for lane in QUEUES
            }

    def depths(self) -> dict[str, int]:
        """Lane -> events waiting to be read."""
        if self._connection is None:
            self._connection = connect(self.settings)
        channel: Any = self._connection.channel()
        try:
            depths = {}
            for lane, queue in QUEUES.items():
                bound: Any = queue(channel)
                depths[lane] = int(bound.queue_declare(passive=True).message_count)
            return depths
        finally:
            channel.close()

    def _ask(self) -> dict[str, bool]:
        # Behind from when the queue holds a backlog until all of it is read: a trickle of live
        # changes never makes a backlog, and a backlog's last events are still part of it.
        try:
            depths = self.depths()
            events = self.pending_events()
            storing = events > self._events
            self._events = events
            return {
                lane: depth > BACKLOG_MESSAGES
                or (self._behind.get(lane, False) and (depth > 0 or storing))
                for lane, depth in depths.items()
            }
        except Exception as exc:
            log.debug("queue depths unavailable", error=str(exc))
            self.close()
            return {}

    def close(self) -> None:
        if self._connection is not None:
            try:
                self._connection.release()
            finally:
                self._connection = None
