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
from dataclasses import dataclass
from typing import Any

import structlog

from schemas.event import OrderChange
from schemas.sellercloud import update_order_body
from worker import metrics, pipeline
from worker.ordering import DEAD_LETTERED, Merge, PendingEvent
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
    replays = len(envelope.get("history") or [])
    finished = coordinator.outcome(event.event_id, replays)
    if finished is not None:
        log.info("event already handled", outcome=finished)
        return finished
    coordinator.enqueue(event, envelope)
    if not coordinator.lock(event.order_id, owner):
        # Another task is writing this order and will take our event with its next PUT.
        raise RetryLater(backoff(0) / 4 + 0.2, counted=False, reason="order_busy")
    try:
        _flush(rt, event.order_id, owner, failures, backoff, dead_letter)
    finally:
        coordinator.unlock(event.order_id, owner)
    outcome = coordinator.outcome(event.event_id, replays)
    if outcome is None:
        # The lock ran out under us and another writer has the event now: check back later.
        raise RetryLater(backoff(0) / 4 + 0.2, counted=False, reason="order_busy")
    return outcome


def _flush(
    rt: Runtime,
    order_id: int,
    owner: str,
    failures: int,
    backoff: Callable[[int], float],
    dead_letter: DeadLetter,
) -> None:
    """Send pending events of the order, merged, until none are left."""
    coordinator = rt.coordinator
    # The lock lives only as long as its holder keeps renewing it: a crashed holder's order is
    # free again within one lock lifetime, and a live one never loses it mid-PUT.
    while coordinator.keep(order_id, owner) and (events := coordinator.take(order_id)):
        merge = coordinator.merge(order_id, events)
        if merge.stale:
            metrics.STALE_FIELDS.inc(len(merge.stale))
            log.info(
                "stale fields skipped",
                skipped=[{"event_id": e, "field": f} for e, f in merge.stale],
                count=len(merge.stale),
            )
        if not merge.changes:
            metrics.EVENTS_SKIPPED.labels(why="stale").inc(len(merge.events))
            coordinator.finish(merge.events, "stale")
            continue
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
            _dead_letter_all(merge, body, error, failures + 1, dead_letter)
            coordinator.finish(merge.events, DEAD_LETTERED)
            continue
        except SellercloudError as error:
            _dead_letter_all(merge, body, error, failures + 1, dead_letter)
            coordinator.finish(merge.events, DEAD_LETTERED)
            continue
        coordinator.applied(order_id, merge)
        metrics.EVENTS_APPLIED.inc(len(merge.events))
        log.info(
            "event applied",
            event_ids=merge.event_ids,
            coalesced=len(merge.events),
            fields=sorted(body),
        )


def _dead_letter_all(
    merge: Merge,
    body: dict[str, Any],
    error: SellercloudError,
    attempts: int,
    dead_letter: DeadLetter,
) -> None:
    """Every event that went into a refused or failed PUT gets its own entry."""
    for pending in merge.events:
        progress = _progress_of(pending, body)
        entry = pipeline.api_failure_entry(pending.envelope, progress, error, attempts)
        others = [e for e in merge.event_ids if e != pending.event_id]
        if others:
            entry["merged_with"] = others
        dead_letter(entry)


def _progress_of(pending: PendingEvent, body: dict[str, Any]) -> pipeline.Progress:
    progress = pipeline.Progress(payload=json.loads(pending.envelope["body"]), body=body)
    progress.event_id = pending.event_id
    payload = progress.payload
    progress.order_id = payload.get("order_id") if isinstance(payload, dict) else None
    return progress
