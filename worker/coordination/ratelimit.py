"""One rate limit for the whole fleet, and the pause every worker keeps after a 429.

Sellercloud allows 10,800 calls an hour per IP address, token calls included. Every call of
every process reserves the next send slot in the shared store (slots evenly spaced, so no window
of any length sees a burst); spacing runs at 90% of the limit, which keeps the API from ever
answering 429 while using nearly all of the budget.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from worker.coordination.gate import GATE_KEY, MET_CLOSED_GATE, FleetPaused
from worker.coordination.rate import Rate
from worker.coordination.store import Store
from worker.observability.metrics import RATE_LIMIT_WAIT
from worker.sellercloud.errors import RateLimited

SLOT_KEY = "order-sync:rate-slot"
PAUSE_KEY = "order-sync:rate-pause"
CALLS_PREFIX = "order-sync:calls:"  # + the minute (UNIX time // 60): calls the fleet made in it
# Longer waits are not slept through in a worker thread: the event is retried at the reset.
LONGEST_SLEEP = 5.0


def calls_key(now: float) -> str:
    return f"{CALLS_PREFIX}{int(now // 60)}"


def calls_last_minute(store: Store, now: float) -> int:
    """Calls the fleet made in the last full minute (the budget used per minute)."""
    return int(store.get(calls_key(now - 60)) or 0)


class FleetRateLimiter:
    """Call ``wait()`` before every API call; it also keeps the fleet's gate (``gate``)."""

    def __init__(
        self,
        store: Store,
        rate: Rate | None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store = store
        self.rate = rate
        self.sleep = sleep
        self._probe = threading.local()

    @contextmanager
    def probing(self) -> Iterator[None]:
        """Calls of this thread go through a closed gate: they are the fleet's one probe."""
        self._probe.active = True
        try:
            yield
        finally:
            self._probe.active = False

    def on_time(self, slot_at: float) -> bool:
        """Whether a call whose slot came at ``slot_at`` (UNIX time) may still use it: a call
        later than half an interval would crowd the next slot's, so it takes a new one."""
        return self.rate is None or time.time() - slot_at <= self.rate.interval / 2

    def wait(self) -> None:
        # One round trip: the gate, the pause, the look ahead (a slot reserved and then not used
        # is budget thrown away) and the reservation happen together in the store.
        gate = None if getattr(self._probe, "active", False) else GATE_KEY
        state, value = self.store.take_slot(
            PAUSE_KEY,
            SLOT_KEY,
            self.rate.interval if self.rate else None,
            LONGEST_SLEEP,
            gate,
            calls_key(time.time()),
        )
        if state == "gated":
            MET_CLOSED_GATE.set()
            raise FleetPaused("the fleet is paused: no calls to Sellercloud until it resumes")
        if state == "paused":
            raise RateLimited(
                "the API asked every worker to wait (HTTP 429)",
                reset_at=dt.datetime.fromtimestamp(value, dt.UTC),
            )
        if state == "full" and self.rate is not None:
            raise RateLimited(
                f"rate limit {self.rate.calls}/{self.rate.per_seconds:g}s reached by the fleet",
                reset_at=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=value),
            )
        if state == "reserved" and value > 0:
            RATE_LIMIT_WAIT.inc(value)
            self.sleep(value)

    def pause_fleet(self, until: dt.datetime | None, fallback_seconds: float) -> float:
        """After a 429: every worker waits until ``until``; returns the seconds to wait."""
        seconds = (until - dt.datetime.now(dt.UTC)).total_seconds() if until else 0.0
        seconds = max(seconds, fallback_seconds)
        self.store.put(PAUSE_KEY, str(time.time() + seconds), ttl=seconds + 1)
        return seconds
