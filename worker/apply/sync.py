"""Bringing orders up to date: an event joins its order, and an order's turn sends one PUT.

Plain functions over the runtime (store, limiter, client, retry policy); the Celery task and
the dispatcher only wire them up. ``absorb_event`` keeps a validated event in the shared store
until its order's turn; ``take_turn`` sends everything pending for the order and settles it:
applied, skipped as stale, dead-lettered, or back in line for a later turn, as the policy in
``worker.apply.retry`` decides.
"""

from __future__ import annotations

import json
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import structlog

from schemas.sellercloud import update_order_body
from worker.apply.history import note
from worker.apply.retry import FLEET_PAUSED, STORE_RETRY_SECONDS, RetryLater
from worker.apply.runtime import Runtime
from worker.coordination.gate import FleetPaused
from worker.coordination.orders import DEAD_LETTERED, OrderTurn, PendingEvent
from worker.coordination.store import StoreUnavailable
from worker.deadletter.entries import EventContext, api_failure_entry, internal_error_entry
from worker.history import kinds
from worker.intake.envelope import prepare
from worker.observability import metrics
from worker.sellercloud.errors import SellercloudError, TransientError

log = structlog.get_logger(__name__)

DeadLetter = Callable[[dict[str, Any]], None]
#: What ``absorb_event`` returns for an event now waiting for its order's turn.
PENDING = "pending"
#: What ``take_turn`` returns when the order's events wait for a later turn, and when nothing
#: in them was newer than what was applied (no call made).
WAITING, STALE = "waiting", "stale"


def absorb_event(
    rt: Runtime,
    envelope: dict[str, Any],
    validated: dict[str, Any] | None,
    context: EventContext,
    lane: str,
) -> str:
    """Validate one event (unless the consumer did: ``validated``) and keep it with its order
    until the order's turn; how far it got is kept in ``context``. Returns ``PENDING``, or how
    the event already ended."""
    event = prepare(envelope, context, validated)
    finished = rt.coordinator.absorb(event, envelope, lane)
    if finished is not None:
        metrics.EVENTS_SKIPPED.labels(why=metrics.SKIPPED_DUPLICATE).inc()
        log.info("event already handled", outcome=finished)
        note(kinds.DUPLICATE, order_id=event.order_id, event_id=event.event_id, outcome=finished)
        return finished
    note(kinds.RECEIVED, order_id=event.order_id, event_id=event.event_id, lane=lane)
    return PENDING


@dataclass
class Sent:
    """How one turn's PUT ended."""

    outcome: str  # "applied", STALE or DEAD_LETTERED
    versions: dict[str, str] = field(default_factory=dict)  # written by an applied PUT
    answered: bool = False  # the API answered (2xx or a refusal): it is up


def take_turn(
    rt: Runtime, turn: OrderTurn, owner: str, dead_letter: DeadLetter, *, slot_at: float | None
) -> str:
    """Send what waits for ``turn``'s order as one PUT and settle the turn; returns the outcome.

    ``slot_at``: when the rate-limit slot the caller waited for came (None: take one). Raises
    FleetPaused, once the events are back in line, when the fleet's gate closed.
    """
    turn_id = uuid.uuid4().hex[:12]
    # The publishers' correlation ids: one, when every event of the turn carries the same.
    correlations = sorted({str(c) for e in turn.events if (c := e.envelope.get("correlation_id"))})
    with structlog.contextvars.bound_contextvars(
        order_id=turn.order_id,
        lane=turn.lane,
        turn_id=turn_id,
        event_ids=[e.event_id for e in turn.events],
        **({"correlation_id": correlations[0]} if len(correlations) == 1 else {}),
        **({"correlation_ids": correlations} if len(correlations) > 1 else {}),
    ):
        try:
            return _take_turn(rt, turn, owner, _with_turn(dead_letter, turn_id), slot_at, turn_id)
        except StoreUnavailable as exc:
            # Not recorded: once the lock runs out the order is due again and its events go
            # once more (with the same values, if the call was made).
            log.warning(
                "shared store unavailable; the turn is sent again once its lock runs out",
                error=str(exc),
            )
            raise


def _take_turn(
    rt: Runtime,
    turn: OrderTurn,
    owner: str,
    dead_letter: DeadLetter,
    slot_at: float | None,
    turn_id: str,
) -> str:
    coordinator = rt.coordinator
    try:
        sent = _send(rt, turn, dead_letter, slot_at, turn_id)
    except FleetPaused:
        metrics.RETRIES.labels(reason=FLEET_PAUSED).inc()
        _note_all(turn, kinds.RETRIED, reason=FLEET_PAUSED, attempt=turn.failures, wait=None)
        coordinator.settle(turn, owner, None, failures=turn.failures)
        raise
    except RetryLater as later:
        failures = turn.failures + int(later.counted)
        metrics.RETRIES.labels(reason=later.reason).inc()
        log.warning(
            "event retry scheduled",
            reason=later.reason,
            error=later.error,
            attempt=failures,
            counted=later.counted,
            countdown=round(later.countdown, 3),
            events=len(turn.events),
        )
        wait = round(later.countdown, 3)
        _note_all(turn, kinds.RETRIED, reason=later.reason, attempt=failures, wait=wait)
        coordinator.settle(turn, owner, None, failures=failures, due_in=later.countdown)
        return WAITING
    except StoreUnavailable:
        raise
    except Exception:
        # A dead letter that could not be published, say: the events wait for another turn.
        coordinator.settle(turn, owner, None, failures=turn.failures, due_in=STORE_RETRY_SECONDS)
        raise
    coordinator.settle(turn, owner, sent.outcome, sent.versions, answered=sent.answered)
    return sent.outcome


def _with_turn(dead_letter: DeadLetter, turn_id: str) -> DeadLetter:
    def dead_letter_of_turn(entry: dict[str, Any]) -> None:
        entry["turn_id"] = turn_id
        dead_letter(entry)

    return dead_letter_of_turn


def _note_all(turn: OrderTurn, kind: str, **detail: Any) -> None:
    for event in turn.events:
        note(kind, order_id=turn.order_id, event_id=event.event_id, **detail)


def _send(
    rt: Runtime, turn: OrderTurn, dead_letter: DeadLetter, slot_at: float | None, turn_id: str
) -> Sent:
    events = turn.events
    if not events:
        return Sent(STALE)
    merge = rt.coordinator.merge(events, turn.versions)
    if merge.stale:
        metrics.STALE_FIELDS.inc(len(merge.stale))
        log.info(
            "stale fields skipped",
            skipped=[{"event_id": e, "field": f} for e, f in merge.stale],
            count=len(merge.stale),
        )
    if not merge.changes:
        metrics.EVENTS_SKIPPED.labels(why=metrics.SKIPPED_STALE).inc(len(events))
        _note_all(turn, kinds.STALE)
        return Sent(STALE)
    try:
        body = update_order_body(merge.changes)
        # The token first: a PUT that waited for one has missed its slot and takes another,
        # rather than go out in a burst with the token request and the next slot's call.
        rt.client.tokens.get()
        slot_taken = slot_at is not None and rt.limiter.on_time(slot_at)
        rt.client.update_order(turn.order_id, body, slot_taken=slot_taken)
    except (FleetPaused, StoreUnavailable):
        raise
    except SellercloudError as error:
        later = rt.policy.after_api_error(
            error, turn.failures, turn.order_id, rt.limiter.pause_fleet, rt.gate
        )
        if isinstance(later, FleetPaused | RetryLater):
            raise later from error
        _dead_letter_all(
            events,
            dead_letter,
            body,
            partial(_api_failure, error),
            turn.failures + 1,
        )
        return Sent(DEAD_LETTERED, answered=not isinstance(error, TransientError))
    except Exception as exc:  # a bug of ours: dead-letter rather than retry it for ever
        log.exception("unexpected error while sending an order's events")
        trace = "".join(traceback.format_exception(exc, limit=20))
        _dead_letter_all(
            events,
            dead_letter,
            merge.changes,
            partial(_internal_error, exc, trace),
            turn.failures + 1,
        )
        return Sent(DEAD_LETTERED)
    metrics.EVENTS_APPLIED.inc(len(events))
    metrics.EVENTS_PER_PUT.observe(len(events))
    fields = sorted(body)
    ids = merge.event_ids
    _note_all(turn, kinds.APPLIED, put_id=turn_id, fields=fields, status_code=200, events=ids)
    log.info("event applied", coalesced=len(events), fields=fields)
    return Sent("applied", merge.versions, answered=True)


def _api_failure(
    error: SellercloudError, env: dict[str, Any], context: EventContext, attempts: int
) -> dict[str, Any]:
    return api_failure_entry(env, context, error, attempts)


def _internal_error(
    exc: Exception, trace: str, env: dict[str, Any], context: EventContext, attempts: int
) -> dict[str, Any]:
    return internal_error_entry(env, context, exc, trace, attempts)


MakeEntry = Callable[[dict[str, Any], EventContext, int], dict[str, Any]]


def _dead_letter_all(
    events: list[PendingEvent],
    dead_letter: DeadLetter,
    body: dict[str, Any],
    make_entry: MakeEntry,
    attempts: int,
) -> None:
    """Every event that went into a refused or failed PUT gets its own entry; if one cannot be
    published, the turn ends with the events still waiting (raises)."""
    for pending in events:
        context = _context_of(pending, body)
        entry = make_entry(pending.envelope, context, attempts)
        others = [e.event_id for e in events if e.event_id != pending.event_id]
        if others:
            entry["merged_with"] = others
        with structlog.contextvars.bound_contextvars(event_id=pending.event_id):
            dead_letter(entry)


def _context_of(pending: PendingEvent, body: dict[str, Any]) -> EventContext:
    context = EventContext(payload=json.loads(pending.envelope["body"]), body=body)
    context.event_id = pending.event_id
    payload = context.payload
    context.order_id = payload.get("order_id") if isinstance(payload, dict) else None
    return context
