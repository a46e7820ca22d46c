"""Bringing one order up to date: what the holder of an order's lock does.

Plain functions over the runtime (store, limiter, client, retry policy); the Celery task only
wires them up. When the event must come back later they raise ``retry.RetryLater``, as the
policy in ``worker.apply.retry`` decides.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from schemas.event import OrderChange
from schemas.sellercloud import update_order_body
from worker.apply.runtime import Runtime
from worker.coordination.gate import FleetPaused
from worker.coordination.orders import DEAD_LETTERED, PendingEvent, Round
from worker.deadletter.entries import EventContext, api_failure_entry
from worker.intake.envelope import prepare
from worker.observability import metrics
from worker.sellercloud.errors import SellercloudError, TransientError

log = structlog.get_logger(__name__)

DeadLetter = Callable[[dict[str, Any]], None]


def apply_event(
    rt: Runtime,
    envelope: dict[str, Any],
    validated: dict[str, Any] | None,
    context: EventContext,
    *,
    owner: str,
    failures: int,
    dead_letter: DeadLetter,
) -> str:
    """Validate one event (unless the consumer did: ``validated``) and apply it with whatever
    else is pending for its order; how far it got is kept in ``context``."""
    event = prepare(envelope, context, validated)
    return sync_event(rt, event, envelope, owner=owner, failures=failures, dead_letter=dead_letter)


def sync_event(
    rt: Runtime,
    event: OrderChange,
    envelope: dict[str, Any],
    *,
    owner: str,
    failures: int,
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
        raise rt.policy.order_busy()
    outcomes: dict[str, str] = {}
    try:
        flush(rt, event.order_id, owner, first, failures, dead_letter, outcomes)
    except BaseException:
        coordinator.unlock(event.order_id, owner)
        raise
    outcome = outcomes.get(event.event_id) or coordinator.outcome(
        event.event_id, len(envelope.get("history") or [])
    )
    if outcome is None:
        # The lock ran out under us and another writer has the event now: check back later.
        raise rt.policy.order_busy()
    return outcome


def flush(
    rt: Runtime,
    order_id: int,
    owner: str,
    first: Round,
    failures: int,
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
        sent = _send(rt, order_id, events, applied_versions, failures)
        if sent.failure is not None:
            _dead_letter_all(events, sent.failure, dead_letter)
        over = coordinator.settle(
            order_id, owner, events, sent.outcome, sent.versions, answered=sent.answered
        )
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

    @property
    def answered(self) -> bool:
        """The API answered the call (2xx or a refusal): it is up."""
        if self.outcome == "applied":
            return True
        return self.failure is not None and not isinstance(self.failure[1], TransientError)


def _send(
    rt: Runtime,
    order_id: int,
    events: list[PendingEvent],
    applied_versions: dict[str, str],
    failures: int,
) -> Sent:
    """One PUT for ``events``, or none when nothing in them is new; raises RetryLater with the
    events put back when the policy says the call is worth repeating later."""
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
        metrics.EVENTS_SKIPPED.labels(why=metrics.SKIPPED_STALE).inc(len(events))
        return Sent("stale")
    body = update_order_body(merge.changes)
    try:
        rt.client.update_order(order_id, body)
    except FleetPaused:
        coordinator.put_back(order_id, events)
        raise
    except SellercloudError as error:
        later = rt.policy.after_api_error(
            error, failures, order_id, rt.limiter.pause_fleet, rt.gate
        )
        if later is None:
            return Sent(DEAD_LETTERED, failure=(body, error, failures + 1))
        coordinator.put_back(order_id, events)
        raise later from error
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
        context = _context_of(pending, body)
        entry = api_failure_entry(pending.envelope, context, error, attempts)
        others = [e.event_id for e in events if e.event_id != pending.event_id]
        if others:
            entry["merged_with"] = others
        dead_letter(entry)


def _context_of(pending: PendingEvent, body: dict[str, Any]) -> EventContext:
    context = EventContext(payload=json.loads(pending.envelope["body"]), body=body)
    context.event_id = pending.event_id
    payload = context.payload
    context.order_id = payload.get("order_id") if isinstance(payload, dict) else None
    return context
