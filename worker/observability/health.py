"""Whether this worker is alive and ready, as its own HTTP server tells Kubernetes.

    /livez   200 unless the consumer's event loop has stopped turning: it runs a heartbeat
             every second. A broker or Sellercloud that is away is no reason to restart a
             worker, so while the worker waits for its broker (Celery reconnects by itself),
             or the fleet is paused, it is still alive.
    /readyz  200 when the worker can take work: connected to its broker and the fleet not
             paused.

Served by the worker on ``ORDER_SYNC_METRICS_PORT`` beside ``/metrics``: a probe is one HTTP
request, not a new Python process (``order-sync health`` costs about 0.5 s of CPU a run).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

# Without a heartbeat for this long while connected, the event loop is stuck.
STALE_SECONDS = 60.0


@dataclass
class WorkerHealth:
    clock: Callable[[], float] = time.monotonic
    connected: bool = False
    paused: str | None = None  # what paused the fleet, as this worker last saw it
    last_beat: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def beat(self) -> None:
        """Called on the consumer's event loop: it turns."""
        self.last_beat = self.clock()

    def connection(self, connected: bool) -> None:
        with self._lock:
            self.connected = connected
            if connected:
                self.last_beat = self.clock()

    def live(self) -> tuple[bool, str]:
        if not self.connected:
            return True, "waiting for the broker; Celery reconnects by itself"
        if self.last_beat is None:
            return True, "starting"
        silent = self.clock() - self.last_beat
        if silent > STALE_SECONDS:
            return False, f"the consumer's event loop has not turned for {silent:.0f} s"
        return True, f"the consumer's event loop turned {silent:.1f} s ago"

    def ready(self) -> tuple[bool, str]:
        if not self.connected:
            return False, "not connected to the broker"
        if self.paused:
            return False, f"the fleet is paused ({self.paused})"
        return True, "reading the queues"


#: This process's health: the consumer step reports to it, the HTTP endpoint reads it.
WORKER = WorkerHealth()
