"""Celery tasks. Names are stable: other systems and queued messages depend on them.

The task is thin: ``sync.absorb_event`` does the work, ``retry.RetryPolicy`` decides what a
failure means, and the base class turns that decision into a Celery retry or a dead letter.
"""

from __future__ import annotations

from typing import Any

import structlog
from celery import Task, shared_task
from celery.exceptions import Reject, Retry

from worker.apply import runtime, sync
from worker.apply.history import note
from worker.apply.retry import STORE_UNAVAILABLE, RetryLater
from worker.broker.topology import TASKS_QUEUE
from worker.coordination.orders import DEAD_LETTERED, LIVE
from worker.deadletter import queue as deadletter_queue
from worker.deadletter.entries import EventContext
from worker.deadletter.reasons import INTERNAL_ERROR
from worker.history import kinds
from worker.observability import metrics

log = structlog.get_logger(__name__)

APPLY_ORDER_EVENT = "order_sync.apply_order_event"


def reprs(envelope: dict[str, Any], event: dict[str, Any] | None) -> dict[str, Any]:
    """Short stand-ins for the task's arguments in Celery's logs and monitors.

    Celery would otherwise write the repr of the whole envelope into every task message: the
    event body twice, customer data in monitoring tools, and about a millisecond of CPU each.
    """
    event_id = event["event_id"] if event else None
    return {
        "argsrepr": f"(<envelope of message {envelope.get('message_id')!r}>,)",
        "kwargsrepr": f"{{'event_id': {event_id!r}}}",
    }


class OrderSyncTask(Task[..., str]):
    """Delivery guarantees of every task of ours, and the policy's decisions carried out."""

    # Ack only once the event is applied or dead-lettered; a killed worker's message comes back.
    acks_late = True
    reject_on_worker_lost = True
    # Retries are decided by worker.apply.retry, not by Celery's autoretry; a wait for another
    # writer or for the rate limit is a retry that counts against nothing.
    max_retries = None

    def after_failure(
        self,
        exc: Exception,
        envelope: dict[str, Any],
        context: EventContext,
        failures: int,
        event: dict[str, Any] | None,
        lane: str = LIVE,
    ) -> str:
        """Retry or dead-letter, as the policy decides; raises Retry to come back later."""
        decision = runtime.current().policy.after_failure(exc)
        if isinstance(decision, RetryLater):
            raise self.come_back(envelope, failures, decision, event, lane) from exc
        if decision.reason == INTERNAL_ERROR:
            log.exception("unexpected error while applying event")
        self.dead_letter(decision.make_entry(envelope, context, failures + 1))
        return DEAD_LETTERED

    def come_back(
        self,
        envelope: dict[str, Any],
        failures: int,
        later: RetryLater,
        event: dict[str, Any] | None = None,
        lane: str = LIVE,
    ) -> Retry:
        """Requeue with a countdown; the message waits in the broker, not in a pool slot."""
        failures += int(later.counted)
        metrics.RETRIES.labels(reason=later.reason).inc()
        if later.reason == STORE_UNAVAILABLE:
            log.warning(
                "shared store unavailable; the event waits and is retried", error=later.error
            )
        if later.counted:
            log.warning(
                "event retry scheduled",
                reason=later.reason,
                error=later.error,
                attempt=failures,
                counted=later.counted,
                countdown=round(later.countdown, 3),
            )
        try:
            self.retry(
                args=(envelope,),
                kwargs={"failures": failures, "lane": lane, **({"event": event} if event else {})},
                countdown=later.countdown,
                max_retries=None,
                # Celery would send a retry back where the request came from: for a first
                # attempt, the events queue, where upstream's plain JSON events wait.
                queue=TASKS_QUEUE.name,
                **reprs(envelope, event),
            )
        except Retry as retry:
            return retry
        except Exception as exc:
            # The retry could not be queued: give the message back to the broker, never ack it.
            raise Reject(f"could not schedule retry: {exc}", requeue=True) from exc
        raise AssertionError("Task.retry always raises")  # pragma: no cover

    def dead_letter(self, entry: dict[str, Any]) -> None:
        entry["task_id"] = self.request.id
        entry["worker"] = self.request.hostname
        try:
            dead_letter(self.app, entry)
        except Exception as exc:
            log.error("dead-letter publish failed; message returned to the queue", error=str(exc))
            raise Reject(f"could not dead-letter: {exc}", requeue=True) from exc


def dead_letter(app: Any, entry: dict[str, Any]) -> None:
    """Publish an entry (returns once the broker has it), count it and say so."""
    with app.producer_or_acquire() as producer:
        deadletter_queue.publish(producer, entry)
    metrics.DEAD_LETTERS.labels(reason=entry["reason"]).inc()
    note(
        kinds.DEAD_LETTERED,
        order_id=entry.get("order_id") if isinstance(entry.get("order_id"), int) else None,
        event_id=entry.get("event_id") if isinstance(entry.get("event_id"), str) else None,
        reason=entry["reason"],
        dead_letter_id=entry["id"],
    )
    log.warning(
        "event dead-lettered",
        reason=entry["reason"],
        error=entry["error"],
        status_code=entry.get("status_code"),
        attempts=entry.get("attempts"),
        dead_letter_id=entry["id"],
        dead_lettered_event_id=entry.get("event_id"),
    )


@shared_task(base=OrderSyncTask, bind=True, name=APPLY_ORDER_EVENT)
def apply_order_event(
    self: OrderSyncTask,
    envelope: dict[str, Any],
    failures: int = 0,
    event: dict[str, Any] | None = None,
    lane: str = LIVE,
) -> str:
    """Keep one upstream event for its order's turn, retry it later, or dead-letter it.

    ``event`` is the event as the worker's event consumer already validated it, if it did;
    ``lane`` where its order waits for its turn (live or bulk).
    """
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(
        task_id=self.request.id, correlation_id=envelope.get("correlation_id")
    )
    context = EventContext()
    try:
        return sync.absorb_event(runtime.current(), envelope, event, context, lane)
    except (Retry, Reject):  # already decided: a retry queued, or the message handed back
        raise
    except Exception as exc:
        return self.after_failure(exc, envelope, context, failures, event, lane)
