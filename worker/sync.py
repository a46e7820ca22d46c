"""Bringing one order up to date: what the holder of an order's lock does.

Plain functions over the runtime (store, limiter, client); the Celery task decides when to run
them again. ``RetryLater`` tells it to come back after ``countdown`` seconds, and whether that
counts against the event's retry budget (API failures do; waiting for another writer, for the
rate limit or for the shared store does not).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from schemas.event import OrderChange
from schemas.sellercloud import update_order_body
from worker import metrics, pipeline
from worker.ordering import DEAD_LETTERED, PendingEvent, Round
from worker.runtime import Runtime
from worker.sellercloud.errors import RateLimited, SellercloudError, TransientError

log = structlog.get_logger(__name__)

DeadLetter = Callable[[dict[str, Any]], None]


@dataclass
class RetryLater(Exception):
    countdown: float
    counted: bool
    reason: str
    error: str = ""


def sync_event(
    rt: Runtime,
    event: OrderChange,
    envelope: dict[str, Any],
    *,
    owner: str,
    failures: int,
    backoff: Callable[[int], float],
    dead_letter: DeadLetter,
) -> str:
    """Apply one validated event, together with whatever else is pending for its order."""
    coordinator = rt.coordinator
    finished, first = coordinator.begin(event, envelope, owner)
    if finished is not None:
        log.info("event already handled", outcome=finished)
        return finished
    if first is None:
        # Another task is writing this order and will take our event with its next PUT.
        raise _order_busy(backoff)
    outcomes: dict[str, str] = {}
    try:
        _flush(rt, event.order_id, owner, first, failures, backoff, dead_letter, outcomes)
    except BaseException:
        coordinator.unlock(event.order_id, owner)
        raise
    outcome = outcomes.get(event.event_id) or coordinator.outcome(
        event.event_id, len(envelope.get("history") or [])
    )
    if outcome is None:
        # The lock ran out under us and another writer has the event now: check back later.
        raise _order_busy(backoff)
    return outcome


def _order_busy(backoff: Callable[[int], float]) -> RetryLater:
    """Come back shortly (not counted as a failure): another writer holds the order."""
    return RetryLater(backoff(0) / 4 + 0.2, counted=False, reason="order_busy")


def _flush(
    rt: Runtime,
    order_id: int,
    owner: str,
    first: Round,
    failures: int,
    backoff: Callable[[int], float],
    dead_letter: DeadLetter,
    outcomes: dict[str, str],
) -> None:
    """Send pending events of the order, merged, round after round (``first`` was taken with
    the lock), until none are left and the lock is released.

    Records how each event ended in ``outcomes``. Returns once the lock is released, or lost:
    the lock lives only as long as its holder keeps renewing it (each ``take`` does), so a
    crashed holder's order is free again within one lock lifetime.
    """
    coordinator = rt.coordinator
    taken: Round | None = first
    while taken is not None:
        events, applied_versions = taken
        sent = _send(rt, order_id, events, applied_versions, failures, backoff)
        if sent.failure is not None:
            _dead_letter_all(events, sent.failure, dead_letter)
        over = coordinator.settle(order_id, owner, events, sent.outcome, sent.versions)
        outcomes.update((e.event_id, sent.outcome) for e in events)
        if over:
            return
        taken = coordinator.take(order_id, owner)


@dataclass
class Sent:
    """How one PUT for a batch of events ended."""

    outcome: str  # "applied", "stale" or DEAD_LETTERED
    versions: dict[str, str] = field(default_factory=dict)  # written by an applied PUT
    failure: tuple[dict[str, Any], SellercloudError, int] | None = None  # body, error, attempts


def _send(
    rt: Runtime,
    order_id: int,
    events: list[PendingEvent],
    applied_versions: dict[str, str],
    failures: int,
    backoff: Callable[[int], float],
) -> Sent:
    """One PUT for ``events``, or none when nothing in them is new; raises RetryLater with the
    events put back when the call is worth repeating later."""
    if not events:
        return Sent("stale")
    coordinator = rt.coordinator
    merge = coordinator.merge(events, applied_versions)
    if merge.stale:
        metrics.STALE_FIELDS.inc(len(merge.stale))
        log.info(
            "stale fields skipped",
            skipped=[{"event_id": e, "field": f} for e, f in merge.stale],
            count=len(merge.stale),
        )
    if not merge.changes:
        metrics.EVENTS_SKIPPED.labels(why="stale").inc(len(events))
        return Sent("stale")
    body = update_order_body(merge.changes)
    try:
        rt.client.update_order(order_id, body)
    except RateLimited as error:
        coordinator.put_back(order_id, events)
        wait = backoff(failures)
        if error.status_code is not None:  # the API itself said 429: the whole fleet waits
            metrics.RATE_LIMIT_PAUSES.inc()
            wait = rt.limiter.pause_fleet(error.reset_at, wait)
        elif error.reset_at is not None:
            wait = max(wait, error.reset_at.timestamp() - time.time())
        raise RetryLater(wait, counted=False, reason=error.reason, error=str(error)) from error
    except TransientError as error:
        if failures < rt.settings.max_retries:
            coordinator.put_back(order_id, events)
            raise RetryLater(
                backoff(failures), counted=True, reason=error.reason, error=str(error)
            ) from error
        return Sent(DEAD_LETTERED, failure=(body, error, failures + 1))
    except SellercloudError as error:
        return Sent(DEAD_LETTERED, failure=(body, error, failures + 1))
    metrics.EVENTS_APPLIED.inc(len(events))
    log.info(
        "event applied",
        event_ids=merge.event_ids,
        coalesced=len(events),
        fields=sorted(body),
    )
    return Sent("applied", merge.versions)


def _dead_letter_all(
    events: list[PendingEvent],
    failure: tuple[dict[str, Any], SellercloudError, int],
    dead_letter: DeadLetter,
) -> None:
    """Every event that went into a refused or failed PUT gets its own entry."""
    body, error, attempts = failure
    for pending in events:
        progress = _progress_of(pending, body)
        entry = pipeline.api_failure_entry(pending.envelope, progress, error, attempts)
        others = [e.event_id for e in events if e.event_id != pending.event_id]
        if others:
            entry["merged_with"] = others
        dead_letter(entry)


def _progress_of(pending: PendingEvent, body: dict[str, Any]) -> pipeline.Progress:
    progress = pipeline.Progress(payload=json.loads(pending.envelope["body"]), body=body)
    progress.event_id = pending.event_id
    payload = progress.payload
    progress.order_id = payload.get("order_id") if isinstance(payload, dict) else None
    return progress
