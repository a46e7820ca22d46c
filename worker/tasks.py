"""Celery tasks. Names are stable: other systems and queued messages depend on them."""

from __future__ import annotations

import random
import traceback
from typing import Any

import structlog
from celery import Task
from celery.exceptions import Reject, Retry

from worker import deadletter, metrics, pipeline, runtime
from worker.celery_app import app
from worker.state import StoreUnavailable
from worker.sync import RetryLater, sync_event
from worker.topology import TASKS_QUEUE

log = structlog.get_logger(__name__)

APPLY_ORDER_EVENT = "order_sync.apply_order_event"
STORE_RETRY_SECONDS = 5.0


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
    """Delivery guarantees and the retry policy shared by every task of ours."""

    # Ack only once the event is applied or dead-lettered; a killed worker's message comes back.
    acks_late = True
    reject_on_worker_lost = True
    # Retries are decided by sync.RetryLater from the settings, not by Celery's autoretry; a
    # wait for another writer or for the rate limit is a retry that counts against nothing.
    max_retries = None

    def backoff(self, failures: int) -> float:
        """Exponential backoff with full jitter."""
        settings = runtime.current().settings
        ceiling = min(settings.retry_backoff_max, settings.retry_backoff * 2**failures)
        return random.uniform(0, ceiling)  # noqa: S311 (jitter, not security)

    def come_back(
        self,
        envelope: dict[str, Any],
        failures: int,
        later: RetryLater,
        event: dict[str, Any] | None = None,
    ) -> Retry:
        """Requeue with a countdown; the message waits in the broker, not in a pool slot."""
        failures += int(later.counted)
        metrics.RETRIES.labels(reason=later.reason).inc()
        if later.counted or later.reason != "order_busy":
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
                kwargs={"failures": failures, **({"event": event} if event else {})},
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
            with self.app.producer_or_acquire() as producer:
                deadletter.publish(producer, entry)
        except Exception as exc:
            log.error("dead-letter publish failed; message returned to the queue", error=str(exc))
            raise Reject(f"could not dead-letter: {exc}", requeue=True) from exc
        metrics.DEAD_LETTERS.labels(reason=entry["reason"]).inc()
        log.warning(
            "event dead-lettered",
            reason=entry["reason"],
            error=entry["error"],
            status_code=entry.get("status_code"),
            attempts=entry.get("attempts"),
            dead_letter_id=entry["id"],
            dead_lettered_event_id=entry.get("event_id"),
        )


@app.task(base=OrderSyncTask, bind=True, name=APPLY_ORDER_EVENT)
def apply_order_event(
    self: OrderSyncTask,
    envelope: dict[str, Any],
    failures: int = 0,
    event: dict[str, Any] | None = None,
) -> str:
    """Apply one upstream event to Sellercloud, retry it later, or dead-letter it.

    ``event`` is the event as the worker's event consumer already validated it, if it did.
    """
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(
        task_id=self.request.id, correlation_id=envelope.get("correlation_id")
    )
    progress = pipeline.Progress()
    try:
        change = pipeline.prepare(envelope, progress, event)
        outcome = sync_event(
            runtime.current(),
            change,
            envelope,
            owner=str(self.request.id),
            failures=failures,
            backoff=self.backoff,
            dead_letter=self.dead_letter,
        )
    except pipeline.EventRejected as rejected:
        self.dead_letter(pipeline.rejected_entry(envelope, progress, rejected, failures + 1))
        return "dead_lettered"
    except RetryLater as later:
        raise self.come_back(envelope, failures, later, event) from later
    except StoreUnavailable as exc:
        log.warning("shared store unavailable; the event waits and is retried", error=str(exc))
        wait = RetryLater(STORE_RETRY_SECONDS, counted=False, reason="store_unavailable")
        raise self.come_back(envelope, failures, wait, event) from exc
    except (Retry, Reject):
        raise
    except Exception as exc:
        log.exception("unexpected error while applying event")
        trace = traceback.format_exc(limit=20)
        self.dead_letter(
            pipeline.internal_error_entry(envelope, progress, exc, trace, failures + 1)
        )
        return "dead_lettered"
    return outcome
