"""The retry policy: every "retry, how long, counted or not, or dead-letter" decision.

An order's turn (``worker.apply.sync.take_turn``) ends in one PUT for its pending events:

    what happened                              decision
    the fleet's gate is closed (an outage,     the events wait for a turn once the gate opens,
      refused credentials, an operator)        not counted (``fleet_paused``)
    the token endpoint refused the             close the gate for the whole fleet
      credentials                              (``coordination.gate``); the events wait
    a transient failure that makes the         close the gate (an outage: several different
      fleet's streak of failures long enough   orders failed in a row); the events wait
    the API answered 429                       the whole fleet pauses until its reset; the
                                               order's next turn comes then, not counted
    a transient failure (5xx, timeout, cut     the order's next turn comes after backoff,
      connection, token trouble)               counted; past ORDER_SYNC_MAX_RETRIES failures
                                               in a row: dead-letter (``retries_exhausted``)
    the API refused the request (4xx)          dead-letter with the error's reason

Before that, an event that reaches a worker's task (``worker.apply.tasks``) is kept for its
order's turn, unless:

    the shared store did not answer            come back in a few seconds, not counted
                                               (``store_unavailable``)
    the event can never succeed as published   dead-letter now with its reason
    anything else (a bug of ours)              dead-letter as ``internal_error``

Backoff is exponential with full jitter: a wait drawn from 0 to
``min(ORDER_SYNC_RETRY_BACKOFF_MAX, ORDER_SYNC_RETRY_BACKOFF * 2**failures)``. Waits that are
not counted never use up an order's retries: they are the fleet's conditions, not the order's.
"""

from __future__ import annotations

import datetime as dt
import random
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from worker.coordination.gate import FleetPaused
from worker.coordination.store import StoreUnavailable
from worker.deadletter import entries
from worker.deadletter.entries import EventContext
from worker.deadletter.reasons import INTERNAL_ERROR
from worker.intake.envelope import EventRejected
from worker.observability import metrics
from worker.sellercloud.errors import (
    ApiUnavailable,
    AuthenticationFailed,
    CredentialsRefused,
    RateLimited,
    SellercloudError,
    TransientError,
)
from worker.settings import ApiSettings

STORE_UNAVAILABLE = "store_unavailable"
FLEET_PAUSED = "fleet_paused"
#: Every ``reason`` a retry is counted under (the ``order_sync_retries_total`` label).
RETRY_REASONS = (
    STORE_UNAVAILABLE,
    FLEET_PAUSED,
    RateLimited.reason,
    ApiUnavailable.reason,
    AuthenticationFailed.reason,
)

STORE_RETRY_SECONDS = 5.0

# Given the 429's reset time and a fallback wait, pauses the whole fleet; returns the wait.
PauseFleet = Callable[[dt.datetime | None, float], float]


class Gate(Protocol):
    """What the policy asks of the fleet's gate (``coordination.gate.FleetGate``)."""

    def note_failure(self, order_id: int, error: Exception) -> bool: ...

    def refuse_credentials(self, error: Exception) -> bool: ...


@dataclass
class RetryLater(Exception):
    """Come back after ``countdown`` seconds; ``counted`` spends one of the event's retries."""

    countdown: float
    counted: bool
    reason: str
    error: str = ""


@dataclass(frozen=True)
class DeadLetterNow:
    """Give up on the event: how to make its dead-letter entry."""

    make_entry: Callable[[dict[str, Any], EventContext, int], dict[str, Any]] = field(repr=False)
    reason: str


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int
    backoff_base: float
    backoff_max: float
    uniform: Callable[[float, float], float] = random.uniform

    @classmethod
    def from_settings(cls, settings: ApiSettings) -> RetryPolicy:
        return cls(settings.max_retries, settings.retry_backoff, settings.retry_backoff_max)

    def backoff(self, failures: int) -> float:
        """Exponential backoff with full jitter."""
        # Past 64 doublings any base is over any cap (and 2**1024 overflows a float).
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** min(failures, 64))
        return self.uniform(0, ceiling)

    def after_api_error(
        self,
        error: SellercloudError,
        failures: int,
        order_id: int,
        pause_fleet: PauseFleet,
        gate: Gate,
    ) -> RetryLater | FleetPaused | None:
        """When to try a failed call for ``order_id`` again: later (RetryLater), once the
        fleet's gate opens (FleetPaused), or never (None: dead-letter the events it carried)."""
        if isinstance(error, CredentialsRefused):
            gate.refuse_credentials(error)
            return FleetPaused(f"credentials refused: {error}")
        if isinstance(error, RateLimited):
            wait = self.backoff(failures)
            if error.status_code is not None:  # the API itself said 429: the whole fleet waits
                metrics.RATE_LIMIT_PAUSES.inc()
                wait = pause_fleet(error.reset_at, wait)
            elif error.reset_at is not None:
                wait = max(wait, error.reset_at.timestamp() - time.time())
            return RetryLater(wait, counted=False, reason=error.reason, error=str(error))
        if isinstance(error, TransientError):
            if gate.note_failure(order_id, error):
                return FleetPaused(f"Sellercloud unavailable: {error}")
            if failures < self.max_retries:
                return RetryLater(
                    self.backoff(failures), counted=True, reason=error.reason, error=str(error)
                )
        return None

    def after_failure(self, exc: Exception) -> RetryLater | DeadLetterNow:
        """What becomes of an event whose task ended in ``exc`` (raised while handling it)."""
        if isinstance(exc, RetryLater):
            return exc
        if isinstance(exc, StoreUnavailable):
            return RetryLater(
                STORE_RETRY_SECONDS, counted=False, reason=STORE_UNAVAILABLE, error=str(exc)
            )
        if isinstance(exc, EventRejected):
            rejected = exc
            return DeadLetterNow(
                lambda env, context, attempts: entries.rejected_entry(
                    env, context, rejected, attempts
                ),
                rejected.reason,
            )
        trace = "".join(traceback.format_exception(exc, limit=20))
        return DeadLetterNow(
            lambda env, context, attempts: entries.internal_error_entry(
                env, context, exc, trace, attempts
            ),
            INTERNAL_ERROR,
        )
